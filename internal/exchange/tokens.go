package exchange

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
)

// TokenCounting sets how the LLM endpoint (POST /v1/complete) counts a call's
// tokens: Config.Tokens. Input tokens are read from the request's JSON body before
// the rules are asked: its "input_tokens" when given, else the characters of its
// "prompt" and of its "messages"' "content" over CharsPerToken, rounded up, at least
// 1. Output tokens are known only once answered: drawn uniformly from MinOutput to
// the body's "max_tokens" (MaxTokens when it gives none), by a hash of the server's
// seed and the req_id, so a request id always gets the same count. The answer's
// body reports both in {"usage":{"input_tokens":..,"output_tokens":..}}.
type TokenCounting struct {
	// CharsPerToken is how many characters make an input token; 4 when 0.
	CharsPerToken int
	// MaxTokens caps the output of a call whose body names no max_tokens; 256
	// when 0.
	MaxTokens int64
	// MinOutput is the least output a call gets; 1 when 0.
	MinOutput int64
}

func (tc TokenCounting) validate() error {
	if tc.CharsPerToken < 0 || tc.MaxTokens < 0 || tc.MinOutput < 0 {
		return errors.New("CharsPerToken, MaxTokens and MinOutput must be at least 0 (0 takes the default)")
	}
	return nil
}

// llmBody is what the LLM endpoint reads of a request's body.
type llmBody struct {
	Prompt   string `json:"prompt"`
	Messages []struct {
		Content string `json:"content"`
	} `json:"messages"`
	MaxTokens   int64 `json:"max_tokens"`
	InputTokens int64 `json:"input_tokens"`
}

// errBadBody is the error for an LLM body that is not a JSON object.
var errBadBody = errors.New("want a JSON object with prompt or messages")

// input returns a call's input tokens and its output cap, read from body.
func (tc TokenCounting) input(body []byte) (in, maxOut int64, err error) {
	var b llmBody
	if err := json.Unmarshal(body, &b); err != nil {
		return 0, 0, fmt.Errorf("%w: %w", errBadBody, err)
	}
	in = b.InputTokens
	if in <= 0 {
		chars := len([]rune(b.Prompt))
		for _, m := range b.Messages {
			chars += len([]rune(m.Content))
		}
		per := max(tc.CharsPerToken, 1)
		if tc.CharsPerToken == 0 {
			per = 4
		}
		in = max(int64((chars+per-1)/per), 1)
	}
	maxOut = b.MaxTokens
	if maxOut <= 0 {
		maxOut = tc.MaxTokens
		if maxOut == 0 {
			maxOut = 256
		}
	}
	return in, maxOut, nil
}

// output returns the output tokens of the call with reqID, at most maxOut.
func (tc TokenCounting) output(seed uint64, reqID string, maxOut int64) int64 {
	lo := max(tc.MinOutput, 1)
	if maxOut <= lo {
		return maxOut
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(reqID))
	x := mix(seed ^ h.Sum64())
	return lo + int64(x%uint64(maxOut-lo+1))
}

// mix is splitmix64's finalizer: spreads the bits of x.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
