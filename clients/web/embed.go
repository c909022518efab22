// Package web holds the built Parley browser app so that parleyd can serve it
// without Node on the machine: `npm run build` writes dist/, which is
// committed, and CI rebuilds it and fails if the committed copy differs.
//
// The sources are the TypeScript app next to this file (see package.json);
// this package only embeds the result.
package web

import (
	"embed"
	"io/fs"
)

//go:embed all:dist
var dist embed.FS

// Dist is the built app rooted at dist/ (index.html at its top), ready for
// http.FileServerFS. It is read-only and safe for concurrent use.
var Dist fs.FS = mustSub(dist, "dist")

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic("web: " + err.Error())
	}
	return sub
}
