package ec2front

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/beevik/etree"
)

// takeFilters removes the named filters (Filter.N.Name / Filter.N.Value.M)
// from the request, renumbering the rest, and returns their values. The
// front applies them to moto's answer itself: they concern what only the lab
// knows (states moto never has) or what moto cannot do (launch-time).
func takeFilters(c *call, names ...string) map[string][]string {
	type filter struct {
		name   string
		values []string
	}
	byIndex := map[int]*filter{}
	for k, vs := range c.form {
		if !strings.HasPrefix(k, "Filter.") {
			continue
		}
		parts := strings.Split(k, ".")
		if len(parts) < 3 {
			continue
		}
		n, err := strconv.Atoi(parts[1])
		if err != nil {
			continue
		}
		fl := byIndex[n]
		if fl == nil {
			fl = &filter{}
			byIndex[n] = fl
		}
		switch {
		case len(parts) == 3 && parts[2] == "Name" && len(vs) > 0:
			fl.name = vs[0]
		case len(parts) == 4 && parts[2] == "Value" && len(vs) > 0:
			m, _ := strconv.Atoi(parts[3])
			for len(fl.values) < m {
				fl.values = append(fl.values, "")
			}
			if m >= 1 {
				fl.values[m-1] = vs[0]
			}
		}
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	taken := map[string][]string{}
	var keep []int
	for n, fl := range byIndex {
		if want[fl.name] {
			taken[fl.name] = append(taken[fl.name], fl.values...)
		} else {
			keep = append(keep, n)
		}
	}
	if len(taken) == 0 {
		return nil
	}
	sort.Ints(keep)
	for k := range c.form {
		if strings.HasPrefix(k, "Filter.") {
			delete(c.form, k)
		}
	}
	for i, n := range keep {
		fl := byIndex[n]
		c.form.Set(fmt.Sprintf("Filter.%d.Name", i+1), fl.name)
		for j, v := range fl.values {
			c.form.Set(fmt.Sprintf("Filter.%d.Value.%d", i+1, j+1), v)
		}
	}
	c.rewrote = true
	return taken
}

// matchAny reports whether s matches one of the filter values, which may
// hold EC2's wildcards: * (any run) and ? (one character).
func matchAny(s string, patterns []string) bool {
	for _, p := range patterns {
		if globRe(p).MatchString(s) {
			return true
		}
	}
	return false
}

func globRe(p string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for _, r := range p {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// formList collects the values of a list parameter: Prefix.1, Prefix.2, ...
func formList(c *call, prefix string) []string {
	var out []string
	for i := 1; ; i++ {
		v, ok := c.form[fmt.Sprintf("%s.%d", prefix, i)]
		if !ok || len(v) == 0 {
			return out
		}
		out = append(out, v[0])
	}
}

func childText(e *etree.Element, tag string) string {
	if c := e.SelectElement(tag); c != nil {
		return c.Text()
	}
	return ""
}

// setChild sets the text of e's child tag, creating it if needed.
func setChild(e *etree.Element, tag, text string) {
	c := e.SelectElement(tag)
	if c == nil {
		c = e.CreateElement(tag)
	}
	c.SetText(text)
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
