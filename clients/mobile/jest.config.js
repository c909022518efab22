// jest with React Native's preset. Unit tests are *.test.ts(x) under src/
// and __tests__/; the end-to-end test against a real parleyd is
// __tests__/integration.test.tsx. jest.setup.js installs the `ws` package as
// the global WebSocket (Node 20 has none), so the app's own default
// WebSocket path is what talks to the server.
module.exports = {
  preset: '@react-native/jest-preset',
  setupFiles: ['<rootDir>/jest.setup.js'],
  testMatch: ['<rootDir>/src/**/*.test.ts?(x)', '<rootDir>/__tests__/**/*.test.ts?(x)'],
  transformIgnorePatterns: [
    'node_modules/(?!((jest-)?react-native|@react-native(-community)?)/)',
  ],
  testTimeout: 120000,
};
