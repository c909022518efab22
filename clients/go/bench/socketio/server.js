// The Socket.IO tutorial's chat server (/work/shared/reference/
// socketio-chat-tutorial.md: "Advanced Chat Server" with the JWT middleware,
// plus the "Socket.io Rooms" handlers), the reference parley-bench compares
// Parley with. Kept as the tutorial wrote it, except:
//   - it listens on loopback only (HOST, PORT) and without express/cors,
//     which the benchmark does not exercise;
//   - on disconnect it broadcasts user_left but does not re-send the whole
//     users_online list to everyone (io.emit), which would make a mass
//     disconnect cost O(n^2) messages per client and Parley has no
//     counterpart; presence on connect (users_online to the newcomer,
//     user_joined to everyone else) is kept, as Parley does the same.
// Messages are kept in memory only: unlike Parley, nothing is persisted.
const http = require('http');
const { Server } = require('socket.io');
const jwt = require('jsonwebtoken');

const secret = process.env.JWT_SECRET;
if (!secret) {
  console.error('JWT_SECRET must be set');
  process.exit(2);
}

const server = http.createServer();
const io = new Server(server, {
  pingTimeout: 60000,
  pingInterval: 25000,
  transports: ['websocket', 'polling'],
});

const users = new Map(); // socketId -> user
const messages = []; // general message history
const chatRooms = new Map(); // roomId -> Set of socket IDs

// JWT authentication middleware
io.use((socket, next) => {
  try {
    const token = socket.handshake.auth.token;
    if (!token) {
      return next(new Error('Authentication token required'));
    }
    socket.user = jwt.verify(token, secret, { algorithms: ['HS256'] });
    next();
  } catch (error) {
    next(new Error('Invalid authentication token'));
  }
});

io.on('connection', (socket) => {
  users.set(socket.id, { id: socket.user.id, email: socket.user.email, socketId: socket.id });
  socket.emit('users_online', Array.from(users.values()));
  socket.broadcast.emit('user_joined', { id: socket.user.id, email: socket.user.email });
  socket.emit('recent_messages', messages.slice(-50));

  socket.on('join_room', (roomId) => {
    socket.join(roomId);
    if (!chatRooms.has(roomId)) {
      chatRooms.set(roomId, new Set());
    }
    chatRooms.get(roomId).add(socket.id);
    socket.to(roomId).emit('user_joined_room', { user: socket.user.email, roomId, timestamp: new Date() });
    const roomSize = chatRooms.get(roomId).size;
    socket.emit('room_joined', {
      roomId,
      userCount: roomSize,
      users: Array.from(chatRooms.get(roomId)).map((id) => {
        const client = io.sockets.sockets.get(id);
        return client ? client.user.email : null;
      }).filter(Boolean),
    });
  });

  socket.on('leave_room', (roomId) => {
    socket.leave(roomId);
    if (chatRooms.has(roomId)) {
      chatRooms.get(roomId).delete(socket.id);
      if (chatRooms.get(roomId).size === 0) {
        chatRooms.delete(roomId);
      }
    }
    socket.to(roomId).emit('user_left_room', { user: socket.user.email, roomId, timestamp: new Date() });
  });

  socket.on('send_room_message', (data) => {
    const { roomId, message } = data;
    if (!chatRooms.has(roomId) || !chatRooms.get(roomId).has(socket.id)) {
      socket.emit('error', { message: 'You are not in this room' });
      return;
    }
    const roomMessage = {
      id: Date.now().toString(),
      text: message,
      sender: socket.user.email,
      roomId,
      timestamp: new Date(),
    };
    // Send to all users in the room (including sender)
    io.to(roomId).emit('room_message', roomMessage);
  });

  socket.on('disconnect', () => {
    for (const [roomId, sockets] of chatRooms.entries()) {
      if (sockets.has(socket.id)) {
        sockets.delete(socket.id);
        socket.to(roomId).emit('user_left_room', { user: socket.user.email, roomId, timestamp: new Date() });
        if (sockets.size === 0) {
          chatRooms.delete(roomId);
        }
      }
    }
    users.delete(socket.id);
    socket.broadcast.emit('user_left', { id: socket.user.id, email: socket.user.email });
  });
});

const HOST = process.env.HOST || '127.0.0.1';
const PORT = Number(process.env.PORT || 3000);
server.listen(PORT, HOST, () => {
  console.log(`socket.io reference chat server on ${HOST}:${PORT} (pid ${process.pid})`);
});
