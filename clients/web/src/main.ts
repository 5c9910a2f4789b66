// The web chat: sign in with a name and the passphrase of this browser's keystore, then
// the chat shell. Only the name is kept (in sessionStorage, so each window or tab is its
// own user): after a reload the sign-in screen asks for the passphrase again, since
// nothing that unlocks the keys is stored.
import './style.css';
import { argon2id } from './argon2';
import { fill } from './dom';
import { DevChatAdapter, type Session } from './sdk-adapter';
import { ChatShell } from './shell';
import { signInScreen } from './signin';

const nameKey = 'umbra.name';
const root = document.getElementById('app') as HTMLElement;
const adapter = new DevChatAdapter(argon2id);

function showSignIn(): void {
  document.title = 'Umbra chat';
  fill(
    root,
    signInScreen(adapter, sessionStorage.getItem(nameKey) ?? '', (s) => {
      sessionStorage.setItem(nameKey, s.name);
      showChat(s);
    }),
  );
}

function showChat(s: Session): void {
  document.title = `${s.name} · Umbra chat`;
  new ChatShell(root, adapter, s, () => {
    sessionStorage.removeItem(nameKey);
    showSignIn();
  }).start();
}

showSignIn();
