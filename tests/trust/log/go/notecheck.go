// notecheck opens and signs C2SP signed notes with Go's golang.org/x/mod/sumdb/note, the reference
// implementation, so that tests/trust/log/test_interop.py can check trust/log/note.py against it.
//
//	notecheck verify <verifier key file> <note file>   print the note's text; exit 1 if it does not verify
//	notecheck sign <signer key file> <text file>        print the text signed as a note
//
// Built offline in GOPATH mode from Debian's golang-golang-x-mod-dev sources:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off go build -o notecheck notecheck.go
package main

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

func main() {
	if len(os.Args) != 4 {
		fail("usage: notecheck verify|sign <key file> <note or text file>")
	}
	key, err := os.ReadFile(os.Args[2])
	if err != nil {
		fail(err.Error())
	}
	data, err := os.ReadFile(os.Args[3])
	if err != nil {
		fail(err.Error())
	}
	keyText := strings.TrimSpace(string(key))
	switch os.Args[1] {
	case "verify":
		v, err := note.NewVerifier(keyText)
		if err != nil {
			fail("verifier key: " + err.Error())
		}
		n, err := note.Open(data, note.VerifierList(v))
		if err != nil {
			fail("open: " + err.Error())
		}
		for _, sig := range n.Sigs {
			fmt.Fprintf(os.Stderr, "verified %s+%08x\n", sig.Name, sig.Hash)
		}
		os.Stdout.WriteString(n.Text)
	case "sign":
		s, err := note.NewSigner(keyText)
		if err != nil {
			fail("signer key: " + err.Error())
		}
		signed, err := note.Sign(&note.Note{Text: string(data)}, s)
		if err != nil {
			fail("sign: " + err.Error())
		}
		os.Stdout.Write(signed)
	default:
		fail("unknown command " + os.Args[1])
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "notecheck:", msg)
	os.Exit(1)
}
