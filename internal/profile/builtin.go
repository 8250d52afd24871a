package profile

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
)

//go:embed builtin/*.yaml
var builtinFS embed.FS

// ErrUnknownBuiltin is wrapped by Builtin's error for a name it does not know.
var ErrUnknownBuiltin = errors.New("no built-in profile of that name")

// builtinYAML holds the built-in profiles that are not files: the reference
// exchange and the simulator's modes.
var builtinYAML = map[string]string{
	"reference":  ReferenceYAML,
	"signed":     SignedYAML,
	"per-minute": PerMinuteYAML,
}

// BuiltinNames lists the built-in profiles: the reference, the simulator's
// modes, and the APIs of real upstreams (binance, kraken, llm).
func BuiltinNames() []string {
	names := []string{"reference", "signed", "per-minute"}
	entries, _ := builtinFS.ReadDir("builtin")
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	return names
}

// Builtin returns the built-in profile of that name.
func Builtin(name string) (*Profile, error) {
	doc, err := BuiltinYAML(name)
	if err != nil {
		return nil, err
	}
	return Parse("built-in profile "+name, []byte(doc))
}

// Open returns the profile at path, or, when no file is there, the built-in
// profile of that name.
func Open(pathOrName string) (*Profile, error) {
	if _, err := os.Stat(pathOrName); err != nil && errors.Is(err, fs.ErrNotExist) && !strings.ContainsAny(pathOrName, "/.") {
		return Builtin(pathOrName)
	}
	return Load(pathOrName)
}

// BuiltinYAML returns the built-in profile's YAML, to start a file from.
func BuiltinYAML(name string) (string, error) {
	if doc, ok := builtinYAML[name]; ok {
		return doc, nil
	}
	if !slices.Contains(BuiltinNames(), name) {
		return "", fmt.Errorf("%w %q: use one of %s, or a profile file's path", ErrUnknownBuiltin, name, strings.Join(BuiltinNames(), ", "))
	}
	b, err := builtinFS.ReadFile("builtin/" + name + ".yaml")
	return string(b), err
}
