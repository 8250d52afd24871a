package roles

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteServerConfig writes rs as a nats-server configuration block: one
// permissions variable per user and one user each whose password comes from an
// environment variable of the server (such as $RATEFLEET_WORKER_PASSWORD), so
// the file holds no secret. To use NKeys, render the roles for the public keys
// as users (For), since a user's subjects carry its name.
func WriteServerConfig(w io.Writer, rs []Role) error {
	var b strings.Builder
	b.WriteString("# ratefleet roles: include in nats-server.conf (in the account that holds\n")
	b.WriteString("# ratefleet's streams). Each password is read from the server's environment;\n")
	b.WriteString("# Each user must connect with the inbox prefix _INBOX_<user> (ratefleet's commands\n")
	b.WriteString("# do; a Go client passes nats.CustomInboxPrefix). For NKeys, render the roles for\n")
	b.WriteString("# the public keys as users and replace `user`/`password` with `nkey: U...`.\n")
	b.WriteString("authorization {\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "  # %s (%s): %s\n", r.Name, r.User, r.Commands)
		fmt.Fprintf(&b, "  %s = {\n", permVar(r))
		fmt.Fprintf(&b, "    publish = { allow = %s }\n", list(r.Publish))
		fmt.Fprintf(&b, "    subscribe = { allow = %s }\n", list(r.Subscribe))
		if r.Responses {
			b.WriteString("    allow_responses = true\n")
		}
		b.WriteString("  }\n")
	}
	b.WriteString("  users = [\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "    { user: %q, password: $%s, permissions: $%s }\n", r.User, PasswordVar(r), permVar(r))
	}
	b.WriteString("  ]\n}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// PasswordVar is the server environment variable WriteServerConfig reads r's
// password from: RATEFLEET_<ROLE>_PASSWORD for the role's default user,
// RATEFLEET_<ROLE>_<USER>_PASSWORD for another.
func PasswordVar(r Role) string { return "RATEFLEET_" + varName(r) + "_PASSWORD" }

func permVar(r Role) string { return varName(r) + "_PERMISSIONS" }

// varName is the role, and the user if not the default, as a variable name.
func varName(r Role) string {
	n := strings.ToUpper(r.Name)
	if r.User != DefaultUser(r.Name) {
		n += "_" + strings.ToUpper(strings.ReplaceAll(r.User, "-", "_"))
	}
	return n
}

func list(subjects []string) string {
	q := make([]string, len(subjects))
	for i, s := range subjects {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// WriteNSC writes rs as nsc commands that add one user per role with its
// permissions, for an operator-mode deployment; the account is a placeholder.
func WriteNSC(w io.Writer, rs []Role, account string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# ratefleet roles as nsc users in account %s; each writes a creds file for --creds.\n", account)
	for _, r := range rs {
		fmt.Fprintf(&b, "# %s (%s, inbox %s): %s\n", r.Name, r.User, r.Inbox, r.Commands)
		fmt.Fprintf(&b, "nsc add user --account %s --name %s \\\n  --allow-pub '%s' \\\n  --allow-sub '%s'",
			account, r.User, strings.Join(r.Publish, ","), strings.Join(r.Subscribe, ","))
		if r.Responses {
			b.WriteString(" \\\n  --allow-pub-response")
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteTable writes rs for people: each role, the commands that run as it, what
// its subjects are for and the subjects themselves.
func WriteTable(w io.Writer, rs []Role) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t(user %s, inbox %s; runs %s)\n", strings.ToUpper(r.Name), r.User, r.Inbox, r.Commands)
		for _, why := range r.Why {
			fmt.Fprintf(tw, "  may\t%s\n", why)
		}
		fmt.Fprintf(tw, "  publish\t%s\n", strings.Join(r.Publish, " "))
		fmt.Fprintf(tw, "  subscribe\t%s\n", strings.Join(r.Subscribe, " "))
		if r.Responses {
			fmt.Fprintf(tw, "  respond\t%s\n", "once to each request it receives, on its reply subject (allow_responses)")
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}
