package bench

import (
	"fmt"
	"html"
	"strings"
)

// Chart geometry (pixels).
const (
	chartW    = 1000
	labelW    = 360
	barAreaW  = 400
	barH      = 14
	barGap    = 4
	rowGap    = 14
	headH     = 86
	sectionH  = 30
	footH     = 30
	fullScale = 2.0 // the bar area spans twice the target
)

// Bar colours: a subject that meets its target, one that misses it; the
// other fsd configuration and the reference in lighter tints.
var barColors = map[string][2]string{
	TFsd:       {"#2e7d32", "#c62828"},
	TFsdNoPoll: {"#66bb6a", "#e57373"},
	TP9Localfs: {"#a5d6a7", "#ef9a9a"},
}

// SVG draws the goals as horizontal bars, one row per goal and one bar per
// subject, each row scaled so that its target sits on the same dashed line
// (the middle of the bar area); a bar longer than twice its target is cut
// and marked. Ratio goals (higher is better) come first, then the launcher
// and footprint limits (lower is better). It needs no library.
func SVG(r *Results) string {
	var ratio, limit []*GoalResult
	for _, g := range r.Goals {
		if g.Max > 0 {
			limit = append(limit, g)
		} else {
			ratio = append(ratio, g)
		}
	}
	rowH := len(subjects)*barH + (len(subjects)-1)*barGap + rowGap
	height := headH + 2*sectionH + (len(ratio)+len(limit))*rowH + footH
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="13">`+"\n",
		chartW, height, chartW, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", chartW, height)
	title := "fsd against its targets"
	if r.Quick {
		title += " (quick smoke run: not for comparison)"
	}
	text(&b, 16, 26, title, `font-size="18" font-weight="bold"`)
	sub := fmt.Sprintf("%s · %d CPUs · %s · %s · %s", r.Machine.CPU, r.Machine.CPUs, r.Machine.Kernel, r.Machine.Go, r.Machine.Date)
	if f := strings.Fields(r.Machine.LoadBefore); len(f) > 0 && parseFloat(f[0]) > busyLoad {
		sub += " · machine busy (load " + f[0] + "): noisy"
	}
	text(&b, 16, 46, sub, `fill="#555"`)
	// Legend.
	x := 16
	for _, s := range subjects {
		c := barColors[s]
		fmt.Fprintf(&b, `<rect x="%d" y="58" width="12" height="12" fill="%s"/><rect x="%d" y="58" width="12" height="12" fill="%s"/>`+"\n", x, c[0], x+13, c[1])
		label := labels[s]
		if ti := r.Targets[s]; ti == nil || !ti.Available {
			label += " (did not run)"
		}
		text(&b, x+30, 69, label+": meets / misses", "")
		x += 320
		if len(subjects) > 2 {
			x -= 320 - (chartW-16)/len(subjects)
		}
	}
	lineX := labelW + barAreaW/2
	y := headH
	section := func(name string, rows []*GoalResult) {
		text(&b, 16, y+20, name, `font-weight="bold"`)
		y += sectionH
		top := y
		for _, g := range rows {
			text(&b, 16, y+barH+4, strings.ReplaceAll(g.Title, "`", ""), "")
			for i, s := range subjects {
				by := y + i*(barH+barGap)
				v, ok := g.Values[s]
				if !ok {
					if s == TFsd || (g.ID != GStart && g.ID != GStop) { // only fsd's launcher is timed
						text(&b, labelW+4, by+barH-3, labels[s]+": "+r.missing(g, s), `fill="#999" font-size="11"`)
					}
					continue
				}
				target := g.Min
				if g.Max > 0 {
					target = g.Max
				}
				frac := v / target / fullScale
				cut := frac > 1
				if cut {
					frac = 1
				}
				w := int(frac * barAreaW)
				if w < 1 {
					w = 1
				}
				c := barColors[s][1]
				if g.Met[s] {
					c = barColors[s][0]
				}
				fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"><title>%s: %s</title></rect>`+"\n",
					labelW, by, w, barH, c, html.EscapeString(labels[s]), html.EscapeString(goalValue(g, v)))
				if cut {
					text(&b, labelW+w-14, by+barH-3, "»", `fill="#fff" font-weight="bold"`)
				}
				text(&b, labelW+barAreaW+10, by+barH-3, goalValue(g, v)+" "+map[bool]string{true: "✓", false: "✗"}[g.Met[s]], `font-size="12"`)
			}
			y += rowH
		}
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333" stroke-dasharray="4 3"/>`+"\n", lineX, top-6, lineX, y-rowGap+4)
	}
	section("Ratios in one run (higher is better; dashed line = target)", ratio)
	section("Launcher and footprint (lower is better; dashed line = limit)", limit)
	text(&b, 16, y+16, "Each row is scaled to its own target: the bar area spans 0 to twice the target; » marks a bar cut at twice. Numbers: BENCHMARKS.md.", `fill="#555" font-size="11"`)
	b.WriteString("</svg>\n")
	return b.String()
}

// missing says why goal g has no value for subject s.
func (r *Results) missing(g *GoalResult, s string) string {
	if ti := r.Targets[s]; ti == nil {
		return "not run"
	} else if !ti.Available {
		return "did not start"
	}
	for _, wr := range r.Workloads {
		if wr.ID != g.Workload {
			continue
		}
		if m := wr.Results[s]; m != nil && m.Error != "" {
			if strings.Contains(m.Error, ErrUnsupported.Error()) {
				return "unsupported by the server"
			}
			return "failed (see BENCHMARKS.md)"
		}
	}
	return "not measured"
}

// goalValue formats a goal's value with its target.
func goalValue(g *GoalResult, v float64) string {
	if g.Max > 0 {
		return fmt.Sprintf("%.1f %s (limit %g)", v, g.Unit, g.Max)
	}
	return fmt.Sprintf("%.2f× %s (target %.2f)", v, g.Versus, g.Min)
}

func text(b *strings.Builder, x, y int, s, attrs string) {
	fmt.Fprintf(b, `<text x="%d" y="%d" %s>%s</text>`+"\n", x, y, attrs, html.EscapeString(s))
}
