//go:build !race

package hostfs

// raceEnabled reports a -race build.
const raceEnabled = false
