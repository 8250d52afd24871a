package cli

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Printable returns s safe to print on a terminal, for a field of a table or a
// line of output: every control character (C0, DEL, C1: ESC would start an
// escape sequence, CR and LF would forge lines), every character that reorders or
// hides text (bidirectional controls, line and paragraph separators) and every
// byte that is not UTF-8 is written as an escape, as strconv.Quote writes it
// (\n, \t, \x1b, \x7f, \u009b, \u202e, \xff); the rest is left as it is, and text
// that needs no escape comes back unchanged. A backslash is left as it is too:
// the result is for reading, not for parsing back.
func Printable(s string) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, unprintable) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x80 && unprintable(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unprintable(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// PrintableJSON returns the JSON text j (as encoding/json writes it) with every
// character Printable would escape and encoding/json does not (DEL, C1 controls,
// bidirectional controls) written as a \u escape: the same JSON value, safe on a
// terminal. encoding/json already escapes the C0 controls and the line and
// paragraph separators, and replaces bytes that are not UTF-8.
func PrintableJSON(j []byte) []byte {
	if !strings.ContainsFunc(string(j), unprintableInJSON) {
		return j
	}
	var b strings.Builder
	for _, r := range string(j) {
		if unprintableInJSON(r) {
			fmt.Fprintf(&b, `\u%04x`, r)
			continue
		}
		b.WriteRune(r)
	}
	return []byte(b.String())
}

// unprintable reports whether r is a control character or one that reorders or
// hides text on a terminal.
func unprintable(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r <= 0x9f: // C0, DEL, C1
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069: // bidirectional controls
		return true
	case r == 0x2028, r == 0x2029: // line and paragraph separators
		return true
	}
	return false
}

// unprintableInJSON reports whether r is unprintable but left as it is by
// encoding/json, in JSON text where the C0 controls are only whitespace between
// tokens.
func unprintableInJSON(r rune) bool { return r >= 0x20 && unprintable(r) }
