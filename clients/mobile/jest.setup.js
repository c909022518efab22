// A real WebSocket for the jest environment: the `ws` package, which takes
// the protocols argument (the token travels in Sec-WebSocket-Protocol) and
// binaryType 'arraybuffer', as React Native's WebSocket does.
const WS = require('ws');

global.WebSocket = WS;
