package main

import (
	"fmt"

	"github.com/fsd-launcher/fsd-launcher/config"
)

const checkConfigHelp = `
Parse and validate a configuration file exactly as start and run do, without
starting anything. Prints "ok: FILE" and exits 0 when it is valid; otherwise
prints the error, which names the key (and the line, where the parser knows
it), and exits 1.`

func checkConfigMain(args []string) int {
	fs := newFlagSet("check-config", "--config FILE", checkConfigHelp)
	cfgPath := fs.String("config", "", "the configuration `FILE` to check (TOML, required)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *cfgPath == "" {
		return usageError(fs, "--config is required")
	}
	if _, err := config.Load(*cfgPath); err != nil {
		return fail("check-config", err)
	}
	fmt.Printf("ok: %s\n", *cfgPath)
	return exitOK
}
