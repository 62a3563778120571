package iam

import (
	"strings"
	"testing"
)

// China's partition has its own service domain: EC2's principal and its
// endpoint (kms:ViaService) are amazonaws.com.cn there.
func TestPartitionServiceDomains(t *testing.T) {
	trust, err := EC2TrustPolicy("aws-cn").JSON()
	if err != nil || !strings.Contains(string(trust), `"ec2.amazonaws.com.cn"`) {
		t.Errorf("EC2TrustPolicy(aws-cn) = %s, %v; want the principal ec2.amazonaws.com.cn", trust, err)
	}
	st := KMSStatements("cn-north-1", []string{"arn:aws-cn:kms:cn-north-1:012345678901:key/0123abcd-0123-0123-0123-0123456789ab"})
	if got := st[0].Condition["StringEquals"]["kms:ViaService"]; len(got) != 1 || got[0] != "ec2.cn-north-1.amazonaws.com.cn" {
		t.Errorf("kms:ViaService in cn-north-1 = %v; want ec2.cn-north-1.amazonaws.com.cn", got)
	}
	if got := KMSStatements("eu-west-1", []string{"k"})[0].Condition["StringEquals"]["kms:ViaService"]; got[0] != "ec2.eu-west-1.amazonaws.com" {
		t.Errorf("kms:ViaService in eu-west-1 = %v", got)
	}
	if p := EC2Principal("aws-us-gov"); p != "ec2.amazonaws.com" {
		t.Errorf("EC2Principal(aws-us-gov) = %q", p)
	}
}
