// The chat's screens once signed in: contacts and groups on the left, the open
// conversation in the middle, a contact's safety number on the right, notices (key
// changes, a new device's keys to restore, errors) above the messages, and the backup,
// restore, new-group and add-members dialogs.
import { fill, h } from './dom';
import {
  type ChatAdapter,
  type ChatEvent,
  type ChatMessage,
  type Contact,
  type Conversation,
  type GroupSummary,
  type KeyChange,
  type Session,
} from './sdk-adapter';

/** How often the contact list is read again (the development directory). */
const contactsRefreshMs = 3000;

/** The key of a conversation in the chat's maps: the contact's identity or the group's. */
function conversationKey(c: Conversation): string {
  return c.kind === 'direct' ? c.contact.identity : c.group.id;
}

export class ChatShell {
  private contacts: Contact[] = [];
  /** Contacts found by name, kept beside the directory's. */
  private added: Contact[] = [];
  private groups: GroupSummary[] = [];
  private open: Conversation | undefined;
  /** The open conversation's messages, by conversation id and sequence. */
  private shown = new Map<string, ChatMessage>();
  /** Conversations (conversationKey) with messages the user has not seen. */
  private readonly unread = new Set<string>();
  private readonly timers: number[] = [];
  private unsubscribe: (() => void) | undefined;

  private readonly contactList = h('ul', { class: 'list', id: 'contacts', 'aria-label': 'Contacts' });
  private readonly groupList = h('ul', { class: 'list', id: 'groups', 'aria-label': 'Groups' });
  private readonly notices = h('div', { class: 'notices', id: 'notices', role: 'status', 'aria-live': 'polite' });
  private readonly title = h('h2', { class: 'conversation-title' }, 'No conversation open');
  private readonly detail = h('span', { class: 'conversation-detail' });
  private readonly safetyButton = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Safety number');
  private readonly addMembersButton = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Add members');
  private readonly messages = h('ol', { class: 'messages', id: 'messages', 'aria-label': 'Messages' });
  private readonly composerText = h('textarea', {
    id: 'composer-text',
    'aria-label': 'Message',
    placeholder: 'Write an encrypted message',
    rows: '2',
    disabled: true,
  });
  private readonly sendButton = h('button', { type: 'submit', disabled: true }, 'Send');
  private readonly safetyPanel = h('aside', { class: 'safety', id: 'safety', 'aria-label': 'Safety number', hidden: true });
  private readonly connection = h('span', { class: 'connection', id: 'connection' }, 'connecting…');
  private readonly backupDialog: HTMLDialogElement;
  private readonly restoreDialog: HTMLDialogElement;
  private readonly groupDialog: HTMLDialogElement;
  private readonly addDialog: HTMLDialogElement;
  /** Lists the current contacts in the new-group and add-members dialogs. */
  private readonly fillMembers: (() => void)[] = [];

  constructor(
    private readonly root: HTMLElement,
    private readonly adapter: ChatAdapter,
    private readonly session: Session,
    private readonly onSignOut: () => void,
  ) {
    this.backupDialog = this.passwordDialog(
      'backup',
      'Back up your keys',
      'Your private keys are encrypted under this password before they leave the browser. The server never sees the password or the keys, and allows only a few wrong guesses.',
      true,
      (password) => this.adapter.backup(password),
      'Keys backed up.',
    );
    this.restoreDialog = this.passwordDialog(
      'restore',
      'Restore your keys',
      'On a new device: restore the keys you backed up, to read your history and go on chatting. They are then kept in this browser under the passphrase you signed in with.',
      false,
      async (password) => {
        await this.adapter.restore(password);
        this.keysRestored();
      },
      'Keys restored.',
    );
    this.groupDialog = this.membersDialog('group', 'New group', 'Create', true, async (name, chosen) => {
      const g = await this.adapter.createGroup(name, chosen);
      await this.refreshGroups();
      this.openConversation({ kind: 'group', group: g });
    });
    this.addDialog = this.membersDialog('add-members', 'Add members', 'Add', false, async (_name, chosen) => {
      const o = this.open;
      if (o?.kind !== 'group') return;
      await this.adapter.addMembers(o.group, chosen);
      await this.refreshGroups();
    });
  }

  /** Draws the shell and starts the contact refresh and the subscription. */
  start(): void {
    const addForm = h(
      'form',
      { class: 'add-contact', onsubmit: (e) => this.addContact(e) },
      h('input', { name: 'name', 'aria-label': 'Add a contact by name', placeholder: 'Add by name', autocomplete: 'off' }),
      h('button', { type: 'submit', class: 'secondary' }, 'Add'),
    );
    const composer = h(
      'form',
      { class: 'composer', onsubmit: (e) => this.send(e) },
      this.composerText,
      this.sendButton,
    );
    this.composerText.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey) {
        e.preventDefault();
        composer.requestSubmit();
      }
    });
    this.safetyButton.addEventListener('click', () => this.toggleSafety());
    this.addMembersButton.addEventListener('click', () => this.showDialog(this.addDialog));
    fill(
      this.root,
      h(
        'div',
        { class: 'shell' },
        h(
          'header',
          { class: 'top' },
          h('h1', {}, 'Umbra chat'),
          h(
            'span',
            { class: 'me', id: 'me', title: this.session.identity },
            'Signed in as ',
            h('strong', {}, this.session.name),
          ),
          this.connection,
          h('span', { class: 'spacer' }),
          h('button', { type: 'button', class: 'secondary', onclick: () => this.backupDialog.showModal() }, 'Back up keys'),
          h('button', { type: 'button', class: 'secondary', onclick: () => this.restoreDialog.showModal() }, 'Restore keys'),
          h('button', { type: 'button', class: 'secondary', onclick: () => this.signOut() }, 'Sign out'),
        ),
        h(
          'nav',
          { class: 'side' },
          h('h2', {}, 'Contacts'),
          this.contactList,
          addForm,
          h('h2', {}, 'Groups'),
          this.groupList,
          h('button', { type: 'button', class: 'secondary', onclick: () => this.showDialog(this.groupDialog) }, 'New group'),
        ),
        h(
          'main',
          { class: 'conversation' },
          h(
            'div',
            { class: 'conversation-head' },
            h('div', {}, this.title, this.detail),
            h('div', { class: 'head-actions' }, this.addMembersButton, this.safetyButton),
          ),
          this.notices,
          this.messages,
          composer,
        ),
        this.safetyPanel,
      ),
      this.backupDialog,
      this.restoreDialog,
      this.groupDialog,
      this.addDialog,
    );
    this.drawContacts();
    this.drawGroups();
    this.showEmpty('Pick a contact or a group to start an end-to-end encrypted conversation.');
    if (this.session.needsRestore) {
      this.restoreNotice();
    }
    void this.refreshContacts();
    void this.refreshGroups();
    this.timers.push(window.setInterval(() => void this.refreshContacts(), contactsRefreshMs));
    this.unsubscribe = this.adapter.subscribe((e) => this.onEvent(e));
  }

  /** Stops the timers and the subscription. */
  stop(): void {
    for (const t of this.timers) {
      window.clearInterval(t);
    }
    this.unsubscribe?.();
  }

  private signOut(): void {
    this.stop();
    this.adapter.signOut();
    this.onSignOut();
  }

  private async refreshContacts(): Promise<void> {
    try {
      const listed = await this.adapter.listContacts();
      const extra = this.added.filter((a) => !listed.some((c) => c.identity === a.identity));
      const next = [...listed, ...extra];
      if (JSON.stringify(next) !== JSON.stringify(this.contacts)) {
        this.contacts = next;
        this.drawContacts();
      }
    } catch (err) {
      this.notice(err, 'contacts');
    }
  }

  private async refreshGroups(): Promise<void> {
    if (this.session.needsRestore) {
      return;
    }
    try {
      this.groups = await this.adapter.listGroups();
      this.drawGroups();
      const o = this.open;
      const now = o?.kind === 'group' ? this.groups.find((g) => g.id === o.group.id) : undefined;
      if (o?.kind === 'group' && now) {
        o.group = now;
        this.drawTitle(o);
      }
    } catch (err) {
      this.notice(err, 'groups');
    }
  }

  private drawContacts(): void {
    if (this.contacts.length === 0) {
      fill(this.contactList, h('li', { class: 'empty' }, 'Nobody else has signed in yet.'));
      return;
    }
    fill(this.contactList, ...this.contacts.map((c) => this.entry({ kind: 'direct', contact: c }, c.name, c.identity)));
  }

  private drawGroups(): void {
    if (this.groups.length === 0) {
      fill(this.groupList, h('li', { class: 'empty' }, 'No groups yet.'));
      return;
    }
    fill(
      this.groupList,
      ...this.groups.map((g) => this.entry({ kind: 'group', group: g }, g.name, g.id, h('span', { class: 'count' }, ` ${g.memberCount}`))),
    );
  }

  /** One button of the contact or group list, with a dot while it has unread messages. */
  private entry(c: Conversation, name: string, title: string, ...extra: Node[]): HTMLLIElement {
    const classes = ['entry'];
    if (this.isOpen(c)) classes.push('open');
    if (this.unread.has(conversationKey(c))) classes.push('unread');
    return h(
      'li',
      {},
      h('button', { type: 'button', class: classes.join(' '), title, onclick: () => this.openConversation(c) }, name, ...extra),
    );
  }

  private isOpen(c: Conversation): boolean {
    return this.open !== undefined && this.open.kind === c.kind && conversationKey(this.open) === conversationKey(c);
  }

  private async addContact(e: Event): Promise<void> {
    e.preventDefault();
    const form = e.target as HTMLFormElement;
    const input = form.elements.namedItem('name') as HTMLInputElement;
    const name = input.value.trim();
    if (!name) {
      return;
    }
    try {
      const c = await this.adapter.findContact(name);
      if (c.identity !== this.session.identity && !this.added.some((a) => a.identity === c.identity)) {
        this.added.push(c);
      }
      input.value = '';
      await this.refreshContacts();
      this.openConversation({ kind: 'direct', contact: c });
    } catch (err) {
      this.notice(err, 'contact');
    }
  }

  private openConversation(c: Conversation): void {
    this.open = c;
    this.shown = new Map();
    this.unread.delete(conversationKey(c));
    this.drawContacts();
    this.drawGroups();
    this.drawTitle(c);
    this.composerText.disabled = false;
    this.sendButton.disabled = false;
    this.safetyPanel.hidden = true;
    fill(this.messages);
    void this.loadHistory(c);
    this.composerText.focus();
  }

  private drawTitle(c: Conversation): void {
    this.title.textContent = c.kind === 'direct' ? c.contact.name : c.group.name;
    this.detail.textContent =
      c.kind === 'direct'
        ? 'direct, end-to-end encrypted'
        : `${c.group.memberCount} members · key epoch ${c.group.epoch}`;
    this.safetyButton.hidden = c.kind !== 'direct';
    this.addMembersButton.hidden = c.kind !== 'group';
  }

  private async loadHistory(c: Conversation): Promise<void> {
    try {
      const history = await this.adapter.history(c);
      if (this.open === c) {
        this.show(...history);
      }
    } catch (err) {
      if (this.open === c) {
        this.showEmpty(errorText(err));
      }
    }
  }

  /** Adds messages to the open conversation and draws it, in order, each once. */
  private show(...ms: ChatMessage[]): void {
    for (const m of ms) {
      this.shown.set(`${m.conversationId}#${m.sequence}`, m);
    }
    if (this.shown.size === 0) {
      this.showEmpty('No messages yet. Say hello: only the people in this conversation can read it.');
      return;
    }
    const ordered = [...this.shown.values()].sort((a, b) => a.sequence - b.sequence);
    fill(this.messages, ...ordered.map((m) => this.messageItem(m)));
    this.messages.scrollTop = this.messages.scrollHeight;
  }

  private showEmpty(text: string): void {
    fill(this.messages, h('li', { class: 'empty' }, text));
  }

  private messageItem(m: ChatMessage): HTMLLIElement {
    const classes = ['message'];
    if (m.mine) classes.push('mine');
    if (m.failed) classes.push('failed');
    return h(
      'li',
      { class: classes.join(' ') },
      h('span', { class: 'sender' }, m.mine ? 'You' : m.senderName),
      h('p', { class: 'text' }, m.text),
      h('time', { datetime: m.sentAt.toISOString() }, m.sentAt.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })),
    );
  }

  private async send(e: Event): Promise<void> {
    e.preventDefault();
    const c = this.open;
    const text = this.composerText.value.trim();
    if (!c || !text) {
      return;
    }
    this.sendButton.disabled = true;
    try {
      const m = await this.adapter.send(c, text);
      this.composerText.value = '';
      document.getElementById('notice-send')?.remove();
      if (this.open === c) {
        this.show(m);
      }
      if (c.kind === 'group') {
        // A send may have rotated the group's key: show the new epoch.
        void this.refreshGroups();
      }
    } catch (err) {
      this.notice(err, 'send');
    } finally {
      this.sendButton.disabled = false;
    }
  }

  private onEvent(e: ChatEvent): void {
    switch (e.type) {
      case 'message':
        if (this.isOpen(e.conversation)) {
          this.show(e.message);
        } else if (!e.message.mine) {
          this.unread.add(conversationKey(e.conversation));
          const c = e.conversation;
          if (c.kind === 'group' && !this.groups.some((g) => g.id === c.group.id)) {
            void this.refreshGroups();
          }
          if (c.kind === 'direct' && !this.contacts.some((k) => k.identity === c.contact.identity)) {
            // Someone the directory does not list (a CLI user): listed from now on.
            this.added.push(c.contact);
            this.contacts = [...this.contacts, c.contact];
          }
          this.drawContacts();
          this.drawGroups();
        }
        break;
      case 'key-change':
        this.keyChangeNotice(e.change);
        break;
      case 'groups-changed':
        void this.refreshGroups();
        break;
      case 'connection':
        this.connection.textContent = e.state === 'live' ? 'live' : 'reconnecting…';
        this.connection.className = `connection ${e.state}`;
        break;
    }
  }

  private keyChangeNotice(change: KeyChange): void {
    const id = `key-change-${change.contact.identity}`;
    document.getElementById(id)?.remove();
    const notice = h(
      'div',
      { class: 'notice key-change', id },
      h('strong', {}, `${change.contact.name}’s key changed.`),
      ` ${change.reason}. Nothing is encrypted to them until you accept. Compare the new safety number with theirs first: `,
      h('code', {}, change.newSafetyNumber.groups.join(' ')),
      h(
        'button',
        {
          type: 'button',
          onclick: async () => {
            try {
              await this.adapter.acceptKeyChange(change.contact);
              notice.remove();
            } catch (err) {
              this.notice(err, 'key-change');
            }
          },
        },
        'Accept the new key',
      ),
    );
    this.notices.append(notice);
  }

  /** On a new device: the keys must be restored from the backup before anything else. */
  private restoreNotice(): void {
    this.notices.append(
      h(
        'div',
        { class: 'notice key-change', id: 'notice-restore' },
        h('strong', {}, 'Your keys are not in this browser.'),
        ' You have keys on another device: restore them from your backup to read your history and chat here.',
        h('button', { type: 'button', onclick: () => this.restoreDialog.showModal() }, 'Restore keys'),
      ),
    );
  }

  private keysRestored(): void {
    document.getElementById('notice-restore')?.remove();
    void this.refreshGroups();
    if (this.open) {
      this.openConversation(this.open);
    }
  }

  private async toggleSafety(): Promise<void> {
    const c = this.open;
    if (!c || c.kind !== 'direct') {
      return;
    }
    if (!this.safetyPanel.hidden) {
      this.safetyPanel.hidden = true;
      return;
    }
    this.safetyPanel.hidden = false;
    const heading = h('h2', {}, `Safety number with ${c.contact.name}`);
    fill(this.safetyPanel, heading, h('p', {}, 'Loading…'));
    try {
      const sn = await this.adapter.safetyNumber(c.contact);
      const pending = sn.pending;
      fill(
        this.safetyPanel,
        heading,
        h(
          'p',
          {},
          `Compare these numbers with the ones ${c.contact.name} sees, in person or on a call. If they match, nobody is in the middle.`,
        ),
        h('div', { class: 'digits', id: 'safety-digits' }, ...sn.groups.map((g) => h('span', {}, g))),
        pending &&
          h(
            'div',
            { class: 'notice key-change' },
            h('strong', {}, `${c.contact.name}’s key changed: `),
            `${pending.reason}. The safety number with the new key:`,
            h('div', { class: 'digits' }, ...pending.groups.map((g) => h('span', {}, g))),
            h(
              'button',
              {
                type: 'button',
                onclick: async () => {
                  try {
                    await this.adapter.acceptKeyChange(c.contact);
                    document.getElementById(`key-change-${c.contact.identity}`)?.remove();
                    this.safetyPanel.hidden = true;
                  } catch (err) {
                    this.notice(err, 'key-change');
                  }
                },
              },
              'Accept the new key',
            ),
          ),
        sn.verified
          ? h('p', { class: 'verified' }, 'Verified')
          : !pending &&
              h(
                'button',
                {
                  type: 'button',
                  onclick: async () => {
                    try {
                      await this.adapter.markVerified(c.contact);
                      this.safetyPanel.hidden = true;
                      await this.toggleSafety();
                    } catch (err) {
                      this.notice(err, 'verify');
                    }
                  },
                },
                'Mark as verified',
              ),
      );
    } catch (err) {
      fill(this.safetyPanel, heading, h('p', { class: 'error' }, errorText(err)));
    }
  }

  /** A notice above the messages, one per topic, replaced by the next of the topic. */
  private notice(err: unknown, topic: string): void {
    const id = `notice-${topic}`;
    document.getElementById(id)?.remove();
    const n = h(
      'div',
      { class: 'notice error', id },
      errorText(err),
      h('button', { type: 'button', class: 'dismiss', 'aria-label': 'Dismiss', onclick: () => n.remove() }, '×'),
    );
    this.notices.append(n);
  }

  private showDialog(dialog: HTMLDialogElement): void {
    for (const f of this.fillMembers) f();
    dialog.showModal();
  }

  private passwordDialog(
    id: string,
    heading: string,
    explain: string,
    confirm: boolean,
    run: (password: string) => Promise<void>,
    done: string,
  ): HTMLDialogElement {
    const status = h('p', { class: 'status', role: 'status' });
    const password = h('input', { type: 'password', name: 'password', 'aria-label': 'Password', autocomplete: confirm ? 'new-password' : 'current-password', required: true });
    const again = h('input', { type: 'password', name: 'again', 'aria-label': 'Password again', autocomplete: 'new-password', required: true });
    const submit = h('button', { type: 'submit' }, confirm ? 'Back up' : 'Restore');
    const dialog = h('dialog', { id: `${id}-dialog` });
    const form = h(
      'form',
      {
        onsubmit: async (e) => {
          e.preventDefault();
          if (confirm && password.value !== again.value) {
            status.textContent = 'The two passwords differ.';
            return;
          }
          submit.disabled = true;
          status.textContent = 'Working… (the password is stretched with Argon2id in a background worker)';
          try {
            await run(password.value);
            status.textContent = done;
            password.value = again.value = '';
          } catch (err) {
            status.textContent = errorText(err);
          } finally {
            submit.disabled = false;
          }
        },
      },
      h('h2', {}, heading),
      h('p', {}, explain),
      h('label', {}, 'Password', password),
      confirm && h('label', {}, 'Password again', again),
      status,
      h(
        'div',
        { class: 'actions' },
        h('button', { type: 'button', class: 'secondary', onclick: () => dialog.close() }, 'Close'),
        submit,
      ),
    );
    dialog.append(form);
    dialog.addEventListener('close', () => {
      status.textContent = '';
      password.value = again.value = '';
    });
    return dialog;
  }

  /** A dialog that picks contacts (and names a new group, if named), then runs run. */
  private membersDialog(
    id: string,
    heading: string,
    action: string,
    named: boolean,
    run: (name: string, chosen: Contact[]) => Promise<void>,
  ): HTMLDialogElement {
    const status = h('p', { class: 'status', role: 'status' });
    const name = h('input', { name: 'group', 'aria-label': 'Group name', required: true, autocomplete: 'off' });
    const members = h('fieldset', { class: 'members' });
    const submit = h('button', { type: 'submit' }, action);
    const dialog = h('dialog', { id: `${id}-dialog` });
    this.fillMembers.push(() => {
      fill(
        members,
        h('legend', {}, 'Members'),
        ...this.contacts.map((c) => h('label', {}, h('input', { type: 'checkbox', value: c.identity }), c.name)),
      );
      status.textContent = '';
    });
    const form = h(
      'form',
      {
        onsubmit: async (e) => {
          e.preventDefault();
          const chosen = this.contacts.filter(
            (c) => members.querySelector<HTMLInputElement>(`input[value="${CSS.escape(c.identity)}"]`)?.checked,
          );
          submit.disabled = true;
          status.textContent = 'Working…';
          try {
            await run(name.value.trim(), chosen);
            name.value = '';
            dialog.close();
          } catch (err) {
            status.textContent = errorText(err);
          } finally {
            submit.disabled = false;
          }
        },
      },
      h('h2', {}, heading),
      named && h('label', {}, 'Name', name),
      members,
      status,
      h(
        'div',
        { class: 'actions' },
        h('button', { type: 'button', class: 'secondary', onclick: () => dialog.close() }, 'Close'),
        submit,
      ),
    );
    dialog.append(form);
    return dialog;
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
