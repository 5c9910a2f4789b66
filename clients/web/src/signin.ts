// The sign-in screen: a name (development only: umbra dev signs any name in) and the
// passphrase that encrypts the name's keys in this browser.
import { h } from './dom';
import type { DevChatAdapter, Session } from './sdk-adapter';

export function signInScreen(adapter: DevChatAdapter, lastName: string, onSignedIn: (s: Session) => void): HTMLElement {
  const name = h('input', {
    id: 'sign-in-name',
    name: 'name',
    placeholder: 'alice',
    autocomplete: 'username',
    required: true,
    maxlength: '64',
  });
  name.value = lastName;
  const passphrase = h('input', {
    id: 'sign-in-passphrase',
    name: 'passphrase',
    type: 'password',
    autocomplete: 'current-password',
    required: true,
  });
  const status = h('p', { class: 'status', role: 'status' });
  const submit = h('button', { type: 'submit' }, 'Sign in');
  const form = h(
    'form',
    {
      class: 'sign-in',
      onsubmit: async (e) => {
        e.preventDefault();
        submit.disabled = true;
        status.textContent = 'Opening your keys… (the passphrase is stretched with Argon2id in a background worker)';
        try {
          const s = await adapter.signIn(name.value, passphrase.value);
          passphrase.value = '';
          onSignedIn(s);
        } catch (err) {
          status.textContent = err instanceof Error ? err.message : String(err);
        } finally {
          submit.disabled = false;
        }
      },
    },
    h('h1', {}, 'Umbra chat'),
    h('p', {}, 'End-to-end encrypted: messages and keys are encrypted in this browser, and the server stores only ciphertext.'),
    h('label', { for: 'sign-in-name' }, 'Your name'),
    name,
    h('label', { for: 'sign-in-passphrase' }, 'Passphrase for your keys in this browser'),
    passphrase,
    submit,
    status,
    h(
      'p',
      { class: 'hint' },
      'Your private keys stay in this browser, encrypted under the passphrase, which never leaves it. The first time you sign in here it sets the passphrase; in a new browser, sign in and then restore your keys from your backup.',
    ),
    h(
      'p',
      { class: 'hint' },
      'Development only: umbra dev signs in any name typed here, for this machine only. A real app signs its users in through its own backend, which mints their Umbra tokens.',
    ),
  );
  queueMicrotask(() => (lastName ? passphrase : name).focus());
  return form;
}
