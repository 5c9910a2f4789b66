package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/sdk"
	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// runSend encrypts a message for one person and sends it in your direct conversation.
func runSend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newClientFlagSet("send", stderr)
	to := fs.String("to", "", "the recipient: a name or an identity")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *to == "" {
		return usagef(stderr, "usage: umbra send --to bob [message]   (message from standard input if absent)")
	}
	c, _, ids, err := f.clientFor(ctx, []string{*to})
	if err != nil {
		return err
	}
	defer c.Close()
	msg, err := readInput(fs.Args())
	if err != nil {
		return err
	}
	resp, err := c.SendTo(ctx, ids[0], msg)
	if err != nil {
		return f.explain(err)
	}
	fmt.Fprintf(stdout, "sent to %s: message %d of %s\n", *to, resp.GetSequence(), resp.GetConversationId())
	return nil
}

// runListen prints, decrypted, every message for the current profile as it arrives,
// resuming where the last listen stopped.
func runListen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newClientFlagSet("listen", stderr)
	fromStart := fs.Bool("from-start", false, "replay every stored message instead of resuming")
	untilIdle := fs.Bool("until-caught-up", false, "stop once every stored message is printed")
	if err := parse(fs, args); err != nil {
		return err
	}
	c, s, err := f.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	dir, err := f.profileDir()
	if err != nil {
		return err
	}
	cursorFile := filepath.Join(dir, "inbox-cursor")
	after := listenCursor(cursorFile, *fromStart)
	if after == nil {
		fmt.Fprintf(stderr, "listening for %s (new messages only; --from-start replays the stored ones)\n", s.Name)
	} else {
		fmt.Fprintf(stderr, "listening for %s, after message %d of the inbox\n", s.Name, *after)
	}
	names := map[string]string{s.Identity: "me"}
	return listenFrom(ctx, c, after, cursorFile, *untilIdle, func(item *messagingv1.SubscribeResponse) {
		switch it := item.GetItem().(type) {
		case *messagingv1.SubscribeResponse_Message:
			printMessage(ctx, stdout, c, f, names, it.Message)
		case *messagingv1.SubscribeResponse_Event:
			when := it.Event.GetCreatedAt().AsTime().Local().Format(time.TimeOnly)
			if ev, ok := sdk.GroupEvent(item); ok {
				fmt.Fprintf(stdout, "[%s] group %s: %s\n", when, ev.GetGroupId(), describeGroupEvent(f, ev))
			} else if ev, ok := sdk.BackupEvent(item); ok {
				fmt.Fprintf(stdout, "[%s] %s\n", when, describeBackupEvent(ev))
			} else {
				fmt.Fprintf(stdout, "[%s] event %s\n", when, it.Event.GetType())
			}
		}
	})
}

// listenCursor returns where a listen that keeps its place in cursorFile resumes: from
// the start with fromStart, else after the inbox sequence the file holds, else (nil)
// live.
func listenCursor(cursorFile string, fromStart bool) *uint64 {
	if fromStart {
		zero := uint64(0)
		return &zero
	}
	if b, err := os.ReadFile(cursorFile); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
			return &n
		}
	}
	return nil
}

// listenFrom subscribes after the inbox sequence after and hands every item but
// heartbeats to show, keeping each item's sequence in cursorFile; with untilIdle it
// stops at the first heartbeat, which says the stored items are all delivered. Stopping
// so, or because ctx was cancelled, is no error.
func listenFrom(ctx context.Context, c *sdk.Client, after *uint64, cursorFile string, untilIdle bool, show func(*messagingv1.SubscribeResponse)) error {
	errCaughtUp := errors.New("caught up")
	err := c.Subscribe(ctx, sdk.SubscribeOptions{After: after}, func(item *messagingv1.SubscribeResponse) error {
		if _, ok := item.GetItem().(*messagingv1.SubscribeResponse_Heartbeat); ok {
			if untilIdle {
				return errCaughtUp
			}
			return nil
		}
		show(item)
		return writeFile0600(cursorFile, []byte(strconv.FormatUint(item.GetInboxSequence(), 10)+"\n"))
	})
	if errors.Is(err, errCaughtUp) || errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// printMessage prints one message, decrypted when it is encrypted, with its sender's
// name when a profile on this machine knows it.
func printMessage(ctx context.Context, w io.Writer, c *sdk.Client, f *clientFlags, names map[string]string, m *messagingv1.Message) {
	sender, ok := names[m.GetSender()]
	if !ok {
		sender = m.GetSender()
		if n := f.profileName(m.GetSender()); n != "" {
			sender = n
		}
		names[m.GetSender()] = sender
	}
	when := m.GetServerTime().AsTime().Local().Format(time.TimeOnly)
	text, err := c.OpenMessage(ctx, m)
	if err != nil {
		fmt.Fprintf(w, "[%s] %s: (cannot read this message: %v)\n", when, sender, f.explain(err))
		return
	}
	fmt.Fprintf(w, "[%s] %s: %s\n", when, sender, strings.TrimRight(string(text), "\n"))
}

// describeBackupEvent says what a backup event means for the user.
func describeBackupEvent(ev *backupv1.BackupEvent) string {
	slot := "password"
	if ev.GetSlot() == backupv1.BackupSlot_BACKUP_SLOT_RECOVERY {
		slot = "recovery-key"
	}
	switch ev.GetKind() {
	case backupv1.BackupEventKind_BACKUP_EVENT_KIND_ERASED:
		return fmt.Sprintf("your %s backup (version %d) was erased after too many wrong attempts: if that was not you, someone has one of your access tokens; back up again with umbra backup create", slot, ev.GetVersion())
	default:
		return fmt.Sprintf("backup event %s on your %s backup", ev.GetKind(), slot)
	}
}
