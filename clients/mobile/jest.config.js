// jest with React Native's preset. Unit tests are *.test.ts(x) under src/
// and __tests__/; the end-to-end test against a real parleyd is
// __tests__/integration.test.tsx. jest.setup.js installs the `ws` package as
// the global WebSocket (Node 20 has none), so the app's own default
// WebSocket path is what talks to the server.
module.exports = {
  preset: '@react-native/jest-preset',
  setupFiles: ['<rootDir>/jest.setup.js'],
  // ../shared (the logic and generated code both apps use; its tests run in
  // the web app's vitest) has no node_modules: bare imports from there
  // resolve from this app's, as with NODE_PATH. babel.config.js is
  // project-wide, so babel-jest transforms those files too.
  modulePaths: ['<rootDir>/node_modules'],
  testMatch: ['<rootDir>/src/**/*.test.ts?(x)', '<rootDir>/__tests__/**/*.test.ts?(x)'],
  transformIgnorePatterns: [
    'node_modules/(?!((jest-)?react-native|@react-native(-community)?)/)',
  ],
  testTimeout: 120000,
};
