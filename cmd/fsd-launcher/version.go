package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// versionString is main.version when set at build time, else the module
// version from the build info.
func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

func versionMain(args []string) int {
	fs := newFlagSet("version", "", "Print the launcher's version (set at build time with\n-ldflags \"-X main.version=...\", else the module version) and the Go version.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	fmt.Printf("%s %s\n", prog, versionString())
	fmt.Printf("go: %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				fmt.Printf("revision: %s\n", s.Value)
			}
		}
	}
	return exitOK
}
