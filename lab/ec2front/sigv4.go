package ec2front

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// verifySignature checks a request's AWS Signature Version 4 (the
// Authorization header) against the secret of its key. The front needs it
// because a request the evaluator allows reaches moto signed with the
// lab's key, so moto no longer checks the caller's signature.
func verifySignature(r *http.Request, body []byte, secret string) bool {
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, "AWS4-HMAC-SHA256 ")
	if !ok {
		return false
	}
	var cred, signed, sig string
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			cred = v
		case "SignedHeaders":
			signed = v
		case "Signature":
			sig = v
		}
	}
	scopeParts := strings.SplitN(cred, "/", 2)
	amzDate := r.Header.Get("X-Amz-Date")
	if len(scopeParts) != 2 || signed == "" || sig == "" || amzDate == "" {
		return false
	}
	scope := scopeParts[1] // date/region/service/aws4_request
	sp := strings.Split(scope, "/")
	if len(sp) != 4 || !strings.HasPrefix(amzDate, sp[0]) {
		return false
	}
	if t, err := time.Parse("20060102T150405Z", amzDate); err != nil || time.Since(t).Abs() > 15*time.Minute {
		return false // AWS refuses a signature more than 15 minutes off
	}
	var ch strings.Builder
	for _, h := range strings.Split(signed, ";") {
		var v string
		if h == "host" {
			v = r.Host
		} else {
			v = strings.Join(r.Header.Values(h), ",")
			if h == "content-length" && v == "" {
				v = strconv.Itoa(len(body))
			}
		}
		ch.WriteString(h + ":" + strings.Join(strings.Fields(v), " ") + "\n")
	}
	payload := sha256Hex(body)
	if h := r.Header.Get("X-Amz-Content-Sha256"); h != "" && h != payload {
		return false // the body is not the one signed
	}
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	canonical := strings.Join([]string{r.Method, path, canonicalQuery(r.URL.Query()), ch.String(), signed, payload}, "\n")
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + sha256Hex([]byte(canonical))
	key := []byte("AWS4" + secret)
	for _, p := range sp {
		key = hmacSHA256(key, p)
	}
	want := hex.EncodeToString(hmacSHA256(key, toSign))
	return hmac.Equal([]byte(want), []byte(sig))
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

func canonicalQuery(q url.Values) string {
	var parts []string
	for k, vs := range q {
		for _, v := range vs {
			parts = append(parts, awsEscape(k)+"="+awsEscape(v))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, "&")
}

// awsEscape is SigV4's URI encoding: everything but A-Z a-z 0-9 - _ . ~.
func awsEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
		} else {
			b.WriteString("%" + strings.ToUpper(hex.EncodeToString([]byte{c})))
		}
	}
	return b.String()
}
