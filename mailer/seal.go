package mailer

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

// A queued mail holds its sign-in link, which must not sit readable in
// the store while it waits: the store otherwise keeps only hashes of
// tokens. Seal encrypts outbox payloads with AES-GCM; the message id is
// the additional data, so a payload cannot be moved to another id.

// SealKeySize is the length of an outbox sealing key.
const SealKeySize = 32

// SealWith makes the outbox encrypt payloads; call it before Enqueue or
// Run. The first key (32 bytes) seals; every key opens, so messages queued
// before a key rotation are still delivered. Every instance sharing the
// store needs the same keys.
func (o *Outbox) SealWith(keys ...[]byte) error {
	o.aeads = nil
	for i, key := range keys {
		if len(key) != SealKeySize {
			return fmt.Errorf("mailer: outbox key %d has %d bytes, want %d", i+1, len(key), SealKeySize)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return err
		}
		o.aeads = append(o.aeads, aead)
	}
	return nil
}

func (o *Outbox) seal(id string, payload []byte) ([]byte, error) {
	if len(o.aeads) == 0 {
		return payload, nil
	}
	a := o.aeads[0]
	nonce := make([]byte, a.NonceSize(), a.NonceSize()+len(payload)+a.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return a.Seal(nonce, nonce, payload, []byte(id)), nil
}

func (o *Outbox) open(id string, sealed []byte) ([]byte, error) {
	if len(o.aeads) == 0 {
		return sealed, nil
	}
	for _, a := range o.aeads {
		n := a.NonceSize()
		if len(sealed) < n {
			break
		}
		if plain, err := a.Open(nil, sealed[:n], sealed[n:], []byte(id)); err == nil {
			return plain, nil
		}
	}
	return nil, errors.New("mailer: outbox payload does not open with any configured key")
}
