// Package awserr classifies the errors of AWS API calls by their error
// code, for the packages that call AWS (bake, cleanup, iam, handoff). It
// owns no retry policy and talks to no service.
package awserr

import (
	"errors"
	"strings"

	"github.com/aws/smithy-go"
)

// Code returns the AWS error code of err ("InvalidInstanceID.NotFound"),
// or "" when err is not an API error.
func Code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// NotFound reports whether err says the resource does not exist: an EC2
// "*.NotFound" code (or a deregistered image's "InvalidAMIID.Unavailable")
// or IAM's "NoSuchEntity".
func NotFound(err error) bool {
	c := Code(err)
	return strings.HasSuffix(c, ".NotFound") || c == "NoSuchEntity" || c == "InvalidAMIID.Unavailable"
}

// Throttled reports whether err is AWS asking the caller to slow down.
func Throttled(err error) bool {
	switch Code(err) {
	case "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestThrottled",
		"RequestThrottledException", "TooManyRequestsException", "SlowDown":
		return true
	}
	return false
}
