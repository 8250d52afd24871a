//go:build race

package producer_test

// raceEnabled is set under the race detector, whose slower goroutines change
// how publishes and the connection's writes interleave.
const raceEnabled = true
