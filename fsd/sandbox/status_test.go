package sandbox

import (
	"os"
	"slices"
	"strings"
	"testing"
)

const sampleStatus = `Name:	fsd-launcher
Umask:	0000
State:	S (sleeping)
Tgid:	4242
Groups:	4 24 27 
NoNewPrivs:	1
Seccomp:	2
Seccomp_filters:	1
CapInh:	0000000000000000
CapPrm:	000000000000001f
CapEff:	000000000000001f
CapBnd:	000000000000001f
CapAmb:	0000000000000000
`

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    Status
		wantErr bool
	}{{
		// A confined daemon's status: every field read, groups in order.
		name: "confined",
		text: sampleStatus,
		want: Status{CapPrm: 0x1f, CapEff: 0x1f, CapBnd: 0x1f, NoNewPrivs: true, Seccomp: 2, Groups: []int{4, 24, 27}},
	}, {
		// An empty Groups line is no groups, not a parse error.
		name: "no groups",
		text: strings.Replace(sampleStatus, "Groups:\t4 24 27 ", "Groups:\t", 1),
		want: Status{CapPrm: 0x1f, CapEff: 0x1f, CapBnd: 0x1f, NoNewPrivs: true, Seccomp: 2, Groups: []int{}},
	}, {
		// Full 64-bit masks survive (no int overflow).
		name: "all bits",
		text: strings.Replace(sampleStatus, "CapBnd:\t000000000000001f", "CapBnd:\tffffffffffffffff", 1),
		want: Status{CapPrm: 0x1f, CapEff: 0x1f, CapBnd: ^uint64(0), NoNewPrivs: true, Seccomp: 2, Groups: []int{4, 24, 27}},
	}, {
		// A missing field is an error: a check must not pass on zero values.
		name:    "missing Seccomp",
		text:    strings.Replace(sampleStatus, "Seccomp:\t2\n", "", 1),
		wantErr: true,
	}, {
		// A malformed mask is an error.
		name:    "bad mask",
		text:    strings.Replace(sampleStatus, "CapEff:\t000000000000001f", "CapEff:\tzz", 1),
		wantErr: true,
	}, {
		// A malformed group id is an error.
		name:    "bad group",
		text:    strings.Replace(sampleStatus, "4 24 27", "4 x", 1),
		wantErr: true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStatus(strings.NewReader(tt.text))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("no error; parsed %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.CapInh != tt.want.CapInh || got.CapPrm != tt.want.CapPrm || got.CapEff != tt.want.CapEff ||
				got.CapBnd != tt.want.CapBnd || got.CapAmb != tt.want.CapAmb || got.NoNewPrivs != tt.want.NoNewPrivs ||
				got.Seccomp != tt.want.Seccomp || !slices.Equal(got.Groups, tt.want.Groups) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestReadStatusSelf reads the test process's real status: the parser
// agrees with the kernel's format and with capget.
func TestReadStatusSelf(t *testing.T) {
	st, err := ReadStatus(0)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	held, err := currentCapabilities()
	if err != nil {
		t.Fatal(err)
	}
	if st.CapEff != uint64(held.effective) || st.CapPrm != uint64(held.permitted) {
		t.Errorf("status CapEff %#x CapPrm %#x, capget %#x %#x", st.CapEff, st.CapPrm, held.effective, held.permitted)
	}
	byPid, err := ReadStatus(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if byPid.CapBnd != st.CapBnd {
		t.Errorf("ReadStatus(pid) CapBnd %#x, ReadStatus(0) %#x", byPid.CapBnd, st.CapBnd)
	}
}

// TestCapabilities pins the kept set: the gofer's minus SYS_CHROOT.
func TestCapabilities(t *testing.T) {
	var names []string
	for _, c := range Capabilities() {
		names = append(names, c.String())
	}
	want := []string{"chown", "dac_override", "dac_read_search", "fowner", "fsetid"}
	if !slices.Equal(names, want) {
		t.Errorf("Capabilities() = %v, want %v", names, want)
	}
	if CapabilityMask() != 0x1f {
		t.Errorf("CapabilityMask() = %#x, want 0x1f (bits 0-4)", CapabilityMask())
	}
	if got := capSet(CapabilityMask()).String(); got != strings.Join(want, ",") {
		t.Errorf("String() = %q", got)
	}
}
