package main

import (
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/ratefleet/ratefleet/internal/exchange"
)

// modelFlags are the flags that choose a model and change it.
type modelFlags struct {
	model        *string
	rules        ruleList
	costs        costList
	accounts     *string
	format       *string
	usageHeaders *string
	noNonce      *bool
	banAfter     *int
	banWithin    *time.Duration
	banFor       *time.Duration
	banMax       *time.Duration
	outsideRate  *float64
	outsideKeys  *string
	outsideCost  *string
}

func registerModelFlags(fs *flag.FlagSet) *modelFlags {
	m := &modelFlags{}
	m.model = fs.String("model", "reference", "built-in `model` of the rules: "+strings.Join(exchange.Models(), ", ")+"; the flags below, and --limit, --window, --block-after, change it")
	fs.Var(&m.rules, "rule", "add a rate `rule` (repeatable): kind=fixed|sliding|bucket,limit=N,window=1m (or rate=R a second for a bucket),cost=requests|weight|orders|input_tokens|output_tokens|tokens,scope=key|account|ip[,name=NAME]")
	fs.Var(&m.costs, "cost", "set the cost of a `path` (repeatable): 'METHOD /path weight=N,orders=N'; a new path is served as /api/request")
	m.accounts = fs.String("accounts", "", "the keys' accounts, for rules of scope account: comma-separated `list` of keyname=account, * for every other key")
	m.format = fs.String("format", "", "answer `format` of the reference-shaped endpoints: reference or kraken (default: the model's)")
	m.usageHeaders = fs.String("usage-headers", "", "usage headers in every answer: comma-separated `styles` among binance, openai, anthropic (default: the model's)")
	m.noNonce = fs.Bool("no-nonce", false, "check no nonce (default: the model's)")
	m.banAfter = fs.Int("ban-after", 0, "ban every key (one IP) with 418 after this many rate-limit rejections within --ban-within; 0 never (default: the model's)")
	m.banWithin = fs.Duration("ban-within", time.Minute, "the span in which --ban-after rejections ban")
	m.banFor = fs.Duration("ban-for", 2*time.Minute, "the first ban's length; each repeat doubles it")
	m.banMax = fs.Duration("ban-max", 72*time.Hour, "the longest ban")
	m.outsideRate = fs.Float64("outside-rate", 0, "calls a second an outside client makes on each key (or each of --outside-keys), seen only in usage headers and as less room")
	m.outsideKeys = fs.String("outside-keys", "", "comma-separated key `names` the outside client uses (default: every key)")
	m.outsideCost = fs.String("outside-cost", "", "each outside call's `cost`: weight=N,orders=N (default weight 1)")
	return m
}

// apply puts the model in cfg, then the flags set that change it. The reference's
// flags (--limit, --window, --block-after, --keys) keep their value when set.
func (m *modelFlags) apply(cfg *exchange.Config, set map[string]bool) error {
	base, err := exchange.ModelConfig(*m.model)
	if err != nil {
		return fmt.Errorf("--model: %w", err)
	}
	if !set["limit"] {
		cfg.Limit = base.Limit
	}
	if !set["window"] {
		cfg.Window = base.Window
	}
	if !set["block-after"] {
		cfg.BlockAfter = base.BlockAfter
	}
	cfg.Keys = base.Keys
	cfg.Model, cfg.Rules, cfg.Accounts, cfg.Costs = base.Model, base.Rules, base.Accounts, base.Costs
	cfg.Tokens, cfg.Ban, cfg.Outside, cfg.Format = base.Tokens, base.Ban, base.Outside, base.Format
	cfg.UsageHeaders, cfg.NoNonce = base.UsageHeaders, base.NoNonce

	cfg.Rules = append(cfg.Rules, m.rules...)
	for _, pc := range m.costs {
		cfg.Costs = setCost(cfg.Costs, pc)
	}
	if set["accounts"] {
		cfg.Accounts = map[string]string{}
		for pair := range strings.SplitSeq(*m.accounts, ",") {
			key, acct, ok := strings.Cut(strings.TrimSpace(pair), "=")
			if !ok || key == "" || acct == "" {
				return fmt.Errorf("--accounts: %q is not keyname=account", pair)
			}
			cfg.Accounts[key] = acct
		}
	}
	if set["format"] {
		if cfg.Format, err = exchange.ParseFormat(*m.format); err != nil {
			return fmt.Errorf("--format: %w", err)
		}
	}
	if set["usage-headers"] {
		if cfg.UsageHeaders, err = exchange.ParseHeaderStyles(*m.usageHeaders); err != nil {
			return fmt.Errorf("--usage-headers: %w", err)
		}
	}
	if set["no-nonce"] {
		cfg.NoNonce = *m.noNonce
	}
	m.applyBan(&cfg.Ban, set)
	if set["outside-rate"] {
		cfg.Outside.Rate = *m.outsideRate
	}
	if set["outside-keys"] {
		cfg.Outside.Keys = strings.Split(*m.outsideKeys, ",")
	}
	if set["outside-cost"] {
		if cfg.Outside.Cost, err = exchange.ParseCost(*m.outsideCost); err != nil {
			return fmt.Errorf("--outside-cost: %w", err)
		}
	}
	return nil
}

// applyBan sets the ban flags given; a ban turned on by --ban-after alone takes the
// other flags' defaults.
func (m *modelFlags) applyBan(b *exchange.Ban, set map[string]bool) {
	if set["ban-after"] {
		b.After = *m.banAfter
	}
	for _, f := range []struct {
		name string
		to   *time.Duration
		from time.Duration
	}{{"ban-within", &b.Within, *m.banWithin}, {"ban-for", &b.For, *m.banFor}, {"ban-max", &b.Max, *m.banMax}} {
		if set[f.name] || (b.After > 0 && *f.to == 0) {
			*f.to = f.from
		}
	}
}

// setCost replaces the entry of pc's method and path, or adds pc.
func setCost(costs []exchange.PathCost, pc exchange.PathCost) []exchange.PathCost {
	out := make([]exchange.PathCost, 0, len(costs)+1)
	for _, c := range costs {
		if c.Method != pc.Method || c.Path != pc.Path {
			out = append(out, c)
		}
	}
	return append(out, pc)
}

// ruleList collects --rule flags.
type ruleList []exchange.Rule

func (l *ruleList) String() string {
	if l == nil || len(*l) == 0 {
		return ""
	}
	return fmt.Sprint(len(*l), " rules")
}

func (l *ruleList) Set(s string) error {
	r, err := exchange.ParseRule(s)
	if err != nil {
		return err
	}
	*l = append(*l, r)
	return nil
}

// costList collects --cost flags.
type costList []exchange.PathCost

func (l *costList) String() string {
	if l == nil || len(*l) == 0 {
		return ""
	}
	return fmt.Sprint(len(*l), " paths")
}

func (l *costList) Set(s string) error {
	pc, err := exchange.ParsePathCost(s)
	if err != nil {
		return err
	}
	*l = append(*l, pc)
	return nil
}
