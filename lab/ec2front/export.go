package ec2front

import "github.com/beevik/etree"

// What layers in front of the front (lab/realism) share with it to read
// and rewrite EC2's XML answers.

// InstanceItems finds every instance item of an answer (DescribeInstances,
// DescribeInstanceStatus, RunInstances).
func InstanceItems(doc *etree.Document) []*etree.Element { return instanceItems(doc) }

// MatchAny reports whether s matches one of a filter's values, with EC2's
// wildcards.
func MatchAny(s string, patterns []string) bool { return matchAny(s, patterns) }

// ChildText is the text of e's child tag, "" when it has none.
func ChildText(e *etree.Element, tag string) string { return childText(e, tag) }

// SetChild sets the text of e's child tag, creating it if needed.
func SetChild(e *etree.Element, tag, text string) { setChild(e, tag, text) }

// AccessKeyID is the access key that signed a request (its Authorization
// header), "" when unsigned.
func AccessKeyID(authorization string) string { return accessKeyID(authorization) }
