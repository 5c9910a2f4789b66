// The sign-in screen: a name, and `umbra dev`'s development sign-in.
import { h } from './dom';
import type { DevChatAdapter, Session } from './sdk-adapter';

export function signInScreen(adapter: DevChatAdapter, onSignedIn: (s: Session) => void): HTMLElement {
  const name = h('input', {
    id: 'sign-in-name',
    name: 'name',
    'aria-label': 'Your name',
    placeholder: 'alice',
    autocomplete: 'username',
    autofocus: true,
    required: true,
    maxlength: '64',
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
        status.textContent = '';
        try {
          onSignedIn(await adapter.signIn(name.value));
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
    submit,
    status,
    h(
      'p',
      { class: 'hint' },
      'Development only: umbra dev signs in any name typed here, for this machine only. A real app signs its users in through its own backend, which mints their Umbra tokens.',
    ),
  );
  return form;
}
