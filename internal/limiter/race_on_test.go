//go:build race

package limiter_test

// raceEnabled scales the simulations down under the race detector, which slows
// them about fivefold.
const raceEnabled = true
