package awserr

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/aws/smithy-go"
)

func apiErr(code string) error {
	return fmt.Errorf("operation X: %w", &smithy.GenericAPIError{Code: code, Message: "m"})
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err                 error
		code                string
		notFound, throttled bool
	}{
		{apiErr("InvalidInstanceID.NotFound"), "InvalidInstanceID.NotFound", true, false},
		{apiErr("InvalidAMIID.Unavailable"), "InvalidAMIID.Unavailable", true, false},
		{apiErr("NoSuchEntity"), "NoSuchEntity", true, false},
		{apiErr("RequestLimitExceeded"), "RequestLimitExceeded", false, true},
		{apiErr("Throttling"), "Throttling", false, true},
		{apiErr("InvalidGroup.Duplicate"), "InvalidGroup.Duplicate", false, false},
		{errors.New("plain"), "", false, false},
		{nil, "", false, false},
	} {
		if got := Code(tc.err); got != tc.code {
			t.Errorf("Code(%v) = %q; want %q", tc.err, got, tc.code)
		}
		if got := NotFound(tc.err); got != tc.notFound {
			t.Errorf("NotFound(%v) = %v; want %v", tc.err, got, tc.notFound)
		}
		if got := Throttled(tc.err); got != tc.throttled {
			t.Errorf("Throttled(%v) = %v; want %v", tc.err, got, tc.throttled)
		}
	}
}

func TestHint(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, "AWS_ENDPOINT_URL"},
		{&net.DNSError{Name: "ec2.xx-nowhere-1.amazonaws.com"}, "aws.region"},
		{apiErr("AuthFailure"), "AWS_PROFILE"},
		{apiErr("UnauthorizedOperation"), "permission"},
		{errors.New("failed to retrieve credentials: none"), "no AWS credentials"},
		{apiErr("InvalidGroup.Duplicate"), ""},
	} {
		got := Hint(tc.err)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("Hint(%v) = %q; want it to name %q", tc.err, got, tc.want)
		}
	}
}

func TestRetryer(t *testing.T) {
	r := NewRetryer()
	if r.MaxAttempts() < 10 {
		t.Errorf("MaxAttempts = %d; want enough to ride out throttling", r.MaxAttempts())
	}
	if !r.IsErrorRetryable(apiErr("RequestLimitExceeded")) {
		t.Errorf("RequestLimitExceeded is not retried")
	}
	// No client-side quota: many retries in a row are all allowed.
	for i := range 1000 {
		if _, err := r.GetRetryToken(t.Context(), apiErr("RequestLimitExceeded")); err != nil {
			t.Fatalf("retry token %d refused: %v", i, err)
		}
	}
}
