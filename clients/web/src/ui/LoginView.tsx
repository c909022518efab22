import { useId, useState, type FormEvent } from "react";
import type { SessionManager } from "../auth/session";
import { errorText } from "../rpc/errors";

/** LoginView registers or logs in; the server validates both forms. */
export function LoginView({ session, notice }: { session: SessionManager; notice: string | null }) {
  const [mode, setMode] = useState<"login" | "register">("login");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const uid = useId();

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      if (mode === "register") await session.register(username.trim(), password);
      else await session.login(username.trim(), password);
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="login">
      <div className="login-card">
        <h1 className="brand-title">Parley</h1>
        <p className="muted">Real-time chat over gRPC.</p>
        {notice && (
          <p className="notice" role="status">
            {notice}
          </p>
        )}
        <div className="tabs" role="tablist" aria-label="Account">
          <button role="tab" type="button" aria-selected={mode === "login"} onClick={() => setMode("login")}>
            Log in
          </button>
          <button role="tab" type="button" aria-selected={mode === "register"} onClick={() => setMode("register")}>
            Register
          </button>
        </div>
        <form onSubmit={submit} aria-label={mode === "login" ? "Log in" : "Register"}>
          <label htmlFor={`${uid}-u`}>Username</label>
          <input
            id={`${uid}-u`}
            name="username"
            autoComplete="username"
            required
            minLength={3}
            maxLength={32}
            pattern="[A-Za-z0-9_.\-]{3,32}"
            title="3–32 letters, digits, _ . -"
            value={username}
            onChange={(e) => setUsername(e.target.value)}
          />
          <label htmlFor={`${uid}-p`}>Password</label>
          <input
            id={`${uid}-p`}
            name="password"
            type="password"
            autoComplete={mode === "login" ? "current-password" : "new-password"}
            required
            minLength={mode === "register" ? 8 : 1}
            value={password}
            onChange={(e) => setPassword(e.target.value)}
          />
          {mode === "register" && <p className="hint">At least 8 characters.</p>}
          {error && (
            <p className="error" role="alert">
              {error}
            </p>
          )}
          <button className="primary" type="submit" disabled={busy}>
            {busy ? "Please wait…" : mode === "login" ? "Log in" : "Create account"}
          </button>
        </form>
      </div>
    </main>
  );
}
