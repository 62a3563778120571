package ec2front

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/latentworker/latentworker/lab/moto"
)

// noBackend is the Backend of a test whose requests never reach an
// instance or image: any call panics, failing the test.
type noBackend struct{ Backend }

// TestResignUnderEnforcement checks, against a real moto_server with IAM
// enforcement on, that a request the front rewrites is signed again with the
// caller's own key: allowed when the caller's policy allows it, denied when
// not (the lab's rights do not leak), and refused for a key the front never
// saw created.
func TestResignUnderEnforcement(t *testing.T) {
	if _, err := exec.LookPath("moto_server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("moto_server is missing")
		}
		t.Skip("moto_server is missing")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ms, err := moto.Start(ctx, t.TempDir(), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Stop()
	iamAt := func(url, id, secret string) *iam.Client {
		return iam.New(iam.Options{Region: "us-east-1", BaseEndpoint: aws.String(url),
			Credentials: credentials.NewStaticCredentialsProvider(id, secret, "")})
	}
	ec2At := func(url, id, secret string) *ec2.Client {
		return ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(url),
			Credentials: credentials.NewStaticCredentialsProvider(id, secret, "")})
	}
	// user makes a user allowed action, with a key made through c.
	user := func(c *iam.Client, name, action string) (string, string) {
		t.Helper()
		if _, err := c.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String(name)}); err != nil {
			t.Fatal(err)
		}
		doc := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"` + action + `","Resource":"*"}]}`
		if _, err := c.PutUserPolicy(ctx, &iam.PutUserPolicyInput{UserName: aws.String(name), PolicyName: aws.String("p"), PolicyDocument: aws.String(doc)}); err != nil {
			t.Fatal(err)
		}
		k, err := c.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String(name)})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(k.AccessKey.AccessKeyId), aws.ToString(k.AccessKey.SecretAccessKey)
	}

	admin, err := ms.EnforceIAM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	adminID, adminSecret := admin.AccessKeyID, admin.SecretAccessKey
	f := New(ms.URL, noBackend{}, nil)
	f.Credentials = admin
	f.Enforcing = true
	srv := httptest.NewServer(f)
	defer srv.Close()

	viaFront := iamAt(srv.URL, adminID, adminSecret)
	readerID, readerSecret := user(viaFront, "reader", "ec2:DescribeInstances")
	otherID, otherSecret := user(viaFront, "other", "ec2:DescribeImages")
	directID, directSecret := user(iamAt(ms.URL, adminID, adminSecret), "direct", "ec2:DescribeInstances")

	// A launch-time filter: moto cannot answer it, so the front rewrites.
	describe := func(id, secret string) error {
		_, err := ec2At(srv.URL, id, secret).DescribeInstances(ctx, &ec2.DescribeInstancesInput{
			Filters: []ec2types.Filter{{Name: aws.String("launch-time"), Values: []string{"2026-*"}}},
		})
		return err
	}
	if err := describe(readerID, readerSecret); err != nil {
		t.Errorf("rewritten DescribeInstances with a key allowed it = %v; want allowed", err)
	}
	var re *smithyhttp.ResponseError
	if err := describe(otherID, otherSecret); !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusForbidden {
		t.Errorf("rewritten DescribeInstances with a key not allowed it = %v; want denied (403)", err)
	}
	var ae smithy.APIError
	if err := describe(directID, directSecret); !errors.As(err, &ae) || ae.ErrorCode() != "UnsupportedOperation" {
		t.Errorf("rewritten DescribeInstances with a key made behind the front's back = %v; want UnsupportedOperation", err)
	}
}
