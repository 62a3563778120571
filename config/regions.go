package config

import (
	"slices"
	"strings"
)

// Regions are the AWS regions aws.copy_to_regions accepts, as of late 2026:
// the commercial ones, GovCloud and China.
var Regions = []string{
	"af-south-1",
	"ap-east-1", "ap-east-2",
	"ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
	"ap-south-1", "ap-south-2",
	"ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5", "ap-southeast-6", "ap-southeast-7",
	"ca-central-1", "ca-west-1",
	"cn-north-1", "cn-northwest-1",
	"eu-central-1", "eu-central-2",
	"eu-north-1",
	"eu-south-1", "eu-south-2",
	"eu-west-1", "eu-west-2", "eu-west-3",
	"il-central-1",
	"me-central-1", "me-south-1",
	"mx-central-1",
	"sa-east-1",
	"us-east-1", "us-east-2",
	"us-gov-east-1", "us-gov-west-1",
	"us-west-1", "us-west-2",
}

// KnownRegion reports whether r is one of Regions.
func KnownRegion(r string) bool { return slices.Contains(Regions, r) }

// Partition is the AWS partition of region r: aws, aws-cn or aws-us-gov.
func Partition(r string) string {
	switch {
	case strings.HasPrefix(r, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(r, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
}

const kmsID = `([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})`

// kmsKeyRegion is the region of a KMS key or alias ARN, "" for an ID or
// alias name.
func kmsKeyRegion(v string) string {
	parts := strings.Split(v, ":")
	if len(parts) >= 6 && parts[0] == "arn" && parts[2] == "kms" {
		return parts[3]
	}
	return ""
}

// KMSAlias reports whether a KMS key is named by an alias (alias/NAME or an
// alias ARN), and returns alias/NAME.
func KMSAlias(v string) (string, bool) {
	if i := strings.Index(v, ":alias/"); i >= 0 && strings.HasPrefix(v, "arn:") {
		return v[i+1:], true
	}
	if strings.HasPrefix(v, "alias/") {
		return v, true
	}
	return "", false
}
