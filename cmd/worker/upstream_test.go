package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheckUpstream_RefusesPlainHTTPOffLoopback(t *testing.T) {
	for _, tc := range []struct {
		url   string
		allow bool
		ok    bool
	}{
		{"http://127.0.0.1:8080", false, true},
		{"http://127.9.9.9:8080", false, true},
		{"http://[::1]:8080", false, true},
		{"http://localhost:8080", false, true},
		{"https://api.example.com", false, true},
		{"http://api.example.com", false, false},
		{"http://10.0.0.5:8080", false, false},
		{"http://user:pw@api.example.com", false, false},
		{"http://api.example.com", true, true},
		{"ftp://api.example.com", true, false},
		{"api.example.com", false, false},
	} {
		t.Run(tc.url, func(t *testing.T) {
			err := checkUpstream(tc.url, tc.allow)
			if tc.ok {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.NotContains(t, err.Error(), "pw@", "the URL's password is not repeated")
		})
	}
}
