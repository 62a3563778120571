package lab

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iam"
)

// labAdminUser is the IAM user whose key the lab and its users work with
// while moto enforces IAM.
const labAdminUser = "latentlab-admin"

// enforceIAM makes an administrator (a user allowed everything) in moto,
// turns moto's IAM enforcement on and returns the administrator's key: from
// then on every request is checked against the policies of the key that
// signed it, so a least-privilege key is refused what it may not do.
//
// moto checks actions only: it ignores conditions and wrongly denies
// resource-scoped allows (LAB-NOTES), so a policy is enforced here at the
// level of its actions.
func enforceIAM(ctx context.Context, motoURL string) (aws.Credentials, error) {
	c := iam.New(iam.Options{
		Region:       DefaultRegion,
		BaseEndpoint: aws.String(motoURL),
		Credentials:  credentials.NewStaticCredentialsProvider(DummyAccessKeyID, DummySecretAccessKey, ""),
	})
	fail := func(err error) (aws.Credentials, error) {
		return aws.Credentials{}, fmt.Errorf("IAM enforcement: %w", err)
	}
	if _, err := c.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String(labAdminUser), Path: aws.String("/latentlab/")}); err != nil {
		return fail(err)
	}
	const all = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`
	if _, err := c.PutUserPolicy(ctx, &iam.PutUserPolicyInput{
		UserName: aws.String(labAdminUser), PolicyName: aws.String("everything"), PolicyDocument: aws.String(all),
	}); err != nil {
		return fail(err)
	}
	key, err := c.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String(labAdminUser)})
	if err != nil {
		return fail(err)
	}
	// moto's switch: the body is how many more requests go unchecked.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, motoURL+"/moto-api/reset-auth", strings.NewReader("0"))
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
