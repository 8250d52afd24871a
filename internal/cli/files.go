package cli

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
)

// ErrFileMode is wrapped by the error for a file of secrets that its group or
// others may read or write.
var ErrFileMode = errors.New("a file of secrets open to its group or others")

// SecretFiles is how a command treats the files of secrets it reads: the API
// keys file, NATS credentials (--creds), an NKey seed (--nkey), a password or
// token file, a TLS client key. One whose group or others may read or write it is
// refused, with the chmod that fixes it, unless Insecure (--insecure-file-mode)
// turns the refusal into a warning. Other files (a CA, a certificate, a profile)
// are not checked: they hold nothing secret.
type SecretFiles struct {
	// Insecure logs a warning instead of refusing the file.
	Insecure bool
}

// Register adds --insecure-file-mode to fs.
func (f *SecretFiles) Register(fs *flag.FlagSet) {
	fs.BoolVar(&f.Insecure, "insecure-file-mode", false, "warn about, instead of refusing, a file of secrets (keys file, --creds, --nkey, --password-file, --token-file, --tlskey) that its group or others may read")
}

// Check returns an error wrapping ErrFileMode when group or others may read or
// write the file at path, which setting (such as --keys-file) named; with
// Insecure it logs the same on log (slog.Default() when nil) and returns nil. A
// file that cannot be stat'ed is left to the read that follows, which reports
// it. On Windows, whose files have no such mode, it checks nothing.
func (f SecretFiles) Check(log *slog.Logger, setting, path string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil
	}
	mode := st.Mode().Perm()
	if mode&0o077 == 0 {
		return nil
	}
	if f.Insecure {
		if log == nil {
			log = slog.Default()
		}
		log.Warn("a file of secrets is open to its group or others; fix it with chmod 600", "setting", setting, "path", path, "mode", fmt.Sprintf("%04o", mode))
		return nil
	}
	return fmt.Errorf("%s %s: %w (mode %04o): run `chmod 600 %s` (or pass --insecure-file-mode to only warn)", setting, path, ErrFileMode, mode, shellQuote(path))
}

// shellQuote returns path as a shell word: as it is when it holds only
// characters no shell treats specially, else in single quotes.
func shellQuote(path string) string {
	if path != "" && strings.Trim(path, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./+,:@%") == "" {
		return path
	}
	return "'" + strings.ReplaceAll(path, "'", `'\''`) + "'"
}
