package sealer_test

import (
	"bytes"
	"fmt"
	"io"

	"github.com/parleychat/parley/server/internal/sealer"
)

func Example() {
	// As an operator would set it, e.g. PARLEY_KEYS. The first key seals;
	// the second is an older key kept so data sealed under it still opens.
	keys, err := sealer.ParseKeys("2025b:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=," +
		"2025a:Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=")
	if err != nil {
		panic(err)
	}
	sealed, _ := keys.Seal([]byte("hello"))
	plain, _ := keys.Open(sealed)
	fmt.Println(keys.ActiveID(), string(plain))

	var file bytes.Buffer
	w, _ := keys.SealWriter(&file)
	io.WriteString(w, "file contents")
	w.Close() // writes the final segment
	r, _ := keys.OpenReader(&file)
	back, _ := io.ReadAll(r)
	fmt.Println(string(back))

	var off *sealer.Keyring // no keys configured: data passes through
	same, _ := off.Seal([]byte("plain"))
	fmt.Println(off.Enabled(), string(same))
	// Output:
	// 2025b hello
	// file contents
	// false plain
}
