package moto

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iam"
)

// AdminUser is the IAM user EnforceIAM makes: its key is the one that may
// do everything once moto enforces IAM.
const AdminUser = "latentlab-admin"

// EnforceIAM makes an administrator (a user allowed everything) in moto,
// turns moto's IAM enforcement on and returns the administrator's key: from
// then on every request is checked against the policies of the key that
// signed it, so a least-privilege key is refused what it may not do.
//
// moto checks actions only: it ignores conditions and wrongly denies
// resource-scoped allows (LAB-NOTES), so a policy is enforced here at the
// level of its actions: the lab's endpoint has every other key's requests
// decided by its IAM evaluator instead (lab/iameval), and only the
// administrator's reach moto's check.
// It must come before anything else calls moto with a key of its own: until
// then moto takes any key.
func (s *Server) EnforceIAM(ctx context.Context) (aws.Credentials, error) {
	c := iam.New(iam.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(s.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDBOOTSTRAP0000000", "bootstrap", ""),
	})
	fail := func(err error) (aws.Credentials, error) {
		return aws.Credentials{}, fmt.Errorf("IAM enforcement: %w", err)
	}
	if _, err := c.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String(AdminUser), Path: aws.String("/latentlab/")}); err != nil {
		return fail(err)
	}
	const all = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`
	if _, err := c.PutUserPolicy(ctx, &iam.PutUserPolicyInput{
		UserName: aws.String(AdminUser), PolicyName: aws.String("everything"), PolicyDocument: aws.String(all),
	}); err != nil {
		return fail(err)
	}
	key, err := c.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String(AdminUser)})
	if err != nil {
		return fail(err)
	}
	// moto's switch: the body is how many more requests go unchecked.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/moto-api/reset-auth", strings.NewReader("0"))
	if err != nil {
		return fail(err)
	}
	req.Header.Set("Content-Type", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fail(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fail(fmt.Errorf("moto-api/reset-auth: %s", resp.Status))
	}
	return aws.Credentials{
		AccessKeyID:     aws.ToString(key.AccessKey.AccessKeyId),
		SecretAccessKey: aws.ToString(key.AccessKey.SecretAccessKey),
	}, nil
}
