// Package sdk is Umbra's Go client: it keeps an identity's private keys in a local
// keystore, publishes and finds cards, and encrypts and decrypts messages, so that the
// server only ever sees public keys and ciphertext. It plays the part of Virgil's E3Kit
// (register, findUsers, encrypt, decrypt, rotatePrivateKey, unregister, cleanup), and
// adds ResetKeys: the way back after every key is lost, with a one-time reset grant
// that only the app backend can obtain, so that an access token alone never replaces a
// user's card.
//
// The app backend authenticates its users and hands out Umbra access tokens; the SDK
// asks for one through a TokenFunc (E3Kit's getToken) whenever it has none or the one
// it has expired or was refused.
//
// Messaging: Client.Send stores one message and waits for it to be durable;
// Client.NewSender returns a Sender that keeps many messages in flight on one stream
// (SendStream), for apps that send a lot; Client.Subscribe delivers everything addressed
// to the user and resumes by itself; Client.History pages through a conversation.
package sdk
