package bench

import (
	"fmt"
	"os"
	"strconv"
	"testing"
)

// envTestPin makes the test binary pin itself (PinProcess) and print the
// Cpus_allowed_list of each of its threads (see TestPinProcess).
const envTestPin = "FSDBENCH_TEST_PIN"

// TestMain lets the harness start this test binary in a server role (the
// echo floor, the p9-localfs reference), as it does with fsdbench.
func TestMain(m *testing.M) {
	MaybeServe()
	if os.Getenv(envFakeLauncher) != "" {
		os.Exit(fakeLauncher(os.Args[1:]))
	}
	if v := os.Getenv(envTestPin); v != "" {
		os.Exit(pinAndReport(v))
	}
	os.Exit(m.Run())
}

func pinAndReport(v string) int {
	cpu, err := strconv.Atoi(v)
	if err == nil {
		err = PinProcess(cpu)
	}
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		list, err := procStatusField(tid, "Cpus_allowed_list")
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		fmt.Println(list)
	}
	return 0
}
