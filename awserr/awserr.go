// Package awserr classifies the errors of AWS API calls by their error
// code, for the packages that call AWS (bake, cleanup, iam, handoff), holds
// the retry policy of latentworker's clients and says which setting an
// error points at. It talks to no service.
package awserr

import (
	"errors"
	"net"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
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

// Denied reports whether err is AWS refusing the call for lack of a
// permission (an IAM policy, a service control policy).
func Denied(err error) bool {
	switch Code(err) {
	case "UnauthorizedOperation", "AccessDenied", "AccessDeniedException":
		return true
	}
	return false
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

// NewRetryer is the retry policy of latentworker's AWS clients: the SDK's
// standard retryer (throttling, 5xx, transient network errors, with
// jittered exponential backoff) allowed enough attempts to ride out a
// throttled account — 12 attempts, backoff up to 20 s, about three minutes
// in all — and without the client-side retry quota, which under sustained
// throttling would fail calls at once, cleanup's among them. Each call is
// further bounded by its context.
func NewRetryer() aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = 12
		o.MaxBackoff = 20 * time.Second
		o.RateLimiter = ratelimit.None
		// A name that does not resolve (a region that does not exist)
		// does not resolve a moment later either.
		o.Retryables = append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
			var dnsErr *net.DNSError
			if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
				return aws.FalseTernary
			}
			return aws.UnknownTernary
		})}, o.Retryables...)
	})
}

// Hint returns what the user should check for err, naming the setting, or
// "" when there is nothing to add: an endpoint that cannot be reached
// (the region, AWS_ENDPOINT_URL), credentials AWS refuses (the profile or
// keys), a permission missing.
func Hint(err error) string {
	var dnsErr *net.DNSError
	var opErr *net.OpError
	switch c := Code(err); {
	case errors.As(err, &dnsErr), errors.As(err, &opErr):
		return "AWS could not be reached: check aws.region (--region, LATENTWORKER_REGION, AWS_REGION) and, if set, AWS_ENDPOINT_URL"
	case c == "AuthFailure", c == "InvalidClientTokenId", c == "UnrecognizedClientException",
		c == "SignatureDoesNotMatch", c == "ExpiredToken", c == "InvalidAccessKeyId":
		return "AWS refused the credentials: check AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws/credentials"
	case c == "UnauthorizedOperation", c == "AccessDenied", c == "AccessDeniedException":
		return "the credentials lack a permission this call needs"
	case strings.Contains(err.Error(), "failed to retrieve credentials"), strings.Contains(err.Error(), "failed to refresh cached credentials"):
		return "no AWS credentials found: set AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws/credentials"
	}
	return ""
}
