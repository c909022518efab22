const path = require('path');
const { getDefaultConfig, mergeConfig } = require('@react-native/metro-config');

// ../shared holds the logic and generated code both apps use. Metro watches it
// and transforms it with this app's babel.config.js (project-wide); it has no
// node_modules, so bare imports from there resolve from this app's, the one
// copy of @bufbuild/protobuf in the bundle.
const shared = path.resolve(__dirname, '../shared');

/** @type {import('@react-native/metro-config').MetroConfig} */
const config = {
  watchFolders: [shared],
  resolver: {
    nodeModulesPaths: [path.resolve(__dirname, 'node_modules')],
  },
};

module.exports = mergeConfig(getDefaultConfig(__dirname), config);
