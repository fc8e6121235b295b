package seal

import "golang.org/x/crypto/curve25519"

// publicOf derives the public key of an X25519 private key.
func publicOf(private [32]byte) ([32]byte, error) {
	var pub [32]byte
	b, err := curve25519.X25519(private[:], curve25519.Basepoint)
	if err != nil {
		return pub, err
	}
	copy(pub[:], b)
	return pub, nil
}
