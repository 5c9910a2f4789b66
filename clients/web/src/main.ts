// The web chat: sign in with a name, then the chat shell. The session (a short-lived
// token for the development app) is kept in sessionStorage, so each window or tab is
// its own user and a reload keeps it.
import './style.css';
import { argon2id } from './argon2';
import { fill } from './dom';
import { DevChatAdapter, type Session } from './sdk-adapter';
import { ChatShell } from './shell';
import { signInScreen } from './signin';

const sessionKey = 'umbra.session';
const root = document.getElementById('app') as HTMLElement;
const adapter = new DevChatAdapter(argon2id);

function saved(): Session | undefined {
  try {
    const raw = sessionStorage.getItem(sessionKey);
    if (!raw) {
      return undefined;
    }
    const s = JSON.parse(raw) as Omit<Session, 'expiresAt'> & { expiresAt: string };
    return { ...s, expiresAt: new Date(s.expiresAt) };
  } catch {
    return undefined;
  }
}

function showSignIn(): void {
  sessionStorage.removeItem(sessionKey);
  fill(
    root,
    signInScreen(adapter, (s) => {
      sessionStorage.setItem(sessionKey, JSON.stringify(s));
      showChat(s);
    }),
  );
  document.title = 'Umbra chat';
}

function showChat(s: Session): void {
  document.title = `${s.name} · Umbra chat`;
  new ChatShell(root, adapter, s, showSignIn).start();
}

const s = saved();
if (s) {
  adapter.resume(s);
}
const current = adapter.current;
if (current) {
  showChat(current);
} else {
  showSignIn();
}
