export const colors = {
  bg: "#ffffff",
  text: "#1b1f24",
  muted: "#5b6470",
  border: "#c8ced6",
  accent: "#2f6fec",
  accent2: "#5a6b84",
  error: "#c62828",
  ok: "#2e7d32",
  warn: "#b26a00",
  bubble: "#eef2f7",
  mine: "#dbe8ff",
};
