// Login and registration: server URL, username, password.

import React, { useState } from "react";
import { ActivityIndicator, Pressable, StyleSheet, Text, TextInput, View } from "react-native";
import { colors } from "./theme";

export interface LoginScreenProps {
  defaultServerUrl: string;
  /** submit logs in or registers; it rejects with a message to show. */
  submit: (mode: "login" | "register", serverUrl: string, username: string, password: string) => Promise<void>;
  notice?: string;
}

export function LoginScreen({ defaultServerUrl, submit, notice }: LoginScreenProps) {
  const [serverUrl, setServerUrl] = useState(defaultServerUrl);
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");

  const go = (mode: "login" | "register") => {
    if (busy) return;
    setBusy(true);
    setError("");
    submit(mode, serverUrl, username.trim(), password).catch((err: Error) => {
      setError(err.message || "failed");
      setBusy(false);
    });
  };

  return (
    <View style={styles.root} testID="login-screen">
      <Text style={styles.title} accessibilityRole="header">
        Parley
      </Text>
      {notice ? <Text style={styles.notice}>{notice}</Text> : null}
      <Text style={styles.label}>Server</Text>
      <TextInput
        style={styles.input}
        value={serverUrl}
        onChangeText={setServerUrl}
        accessibilityLabel="Server URL"
        autoCapitalize="none"
        autoCorrect={false}
        keyboardType="url"
        placeholder="http://10.0.2.2:8080"
      />
      <Text style={styles.label}>Username</Text>
      <TextInput
        style={styles.input}
        value={username}
        onChangeText={setUsername}
        accessibilityLabel="Username"
        autoCapitalize="none"
        autoCorrect={false}
        textContentType="username"
      />
      <Text style={styles.label}>Password</Text>
      <TextInput
        style={styles.input}
        value={password}
        onChangeText={setPassword}
        accessibilityLabel="Password"
        secureTextEntry
        textContentType="password"
        onSubmitEditing={() => go("login")}
      />
      {error ? (
        <Text style={styles.error} accessibilityRole="alert" testID="login-error">
          {error}
        </Text>
      ) : null}
      <View style={styles.row}>
        <Pressable
          style={[styles.button, busy && styles.disabled]}
          onPress={() => go("login")}
          accessibilityRole="button"
          accessibilityLabel="Log in"
          accessibilityState={{ disabled: busy }}
        >
          <Text style={styles.buttonText}>Log in</Text>
        </Pressable>
        <Pressable
          style={[styles.button, styles.secondary, busy && styles.disabled]}
          onPress={() => go("register")}
          accessibilityRole="button"
          accessibilityLabel="Register"
          accessibilityState={{ disabled: busy }}
        >
          <Text style={styles.buttonText}>Register</Text>
        </Pressable>
      </View>
      {busy ? <ActivityIndicator accessibilityLabel="Signing in" /> : null}
    </View>
  );
}

const styles = StyleSheet.create({
  root: { flex: 1, padding: 24, justifyContent: "center", backgroundColor: colors.bg },
  title: { fontSize: 32, fontWeight: "700", marginBottom: 24, color: colors.text },
  label: { marginTop: 12, marginBottom: 4, color: colors.muted },
  input: { borderWidth: 1, borderColor: colors.border, borderRadius: 6, padding: 10, color: colors.text },
  row: { flexDirection: "row", gap: 12, marginTop: 20 },
  button: { flex: 1, backgroundColor: colors.accent, borderRadius: 6, padding: 12, alignItems: "center" },
  secondary: { backgroundColor: colors.accent2 },
  disabled: { opacity: 0.5 },
  buttonText: { color: "#fff", fontWeight: "600" },
  error: { color: colors.error, marginTop: 12 },
  notice: { color: colors.muted, marginBottom: 12 },
});
