package cleanup

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/lab/moto/mototest"
)

// benchRegions are the regions BenchmarkFind seeds, first R of them.
var benchRegions = []string{
	"us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-west-2", "eu-west-3",
	"eu-central-1", "eu-north-1", "ap-south-1", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
	"ap-southeast-1", "ap-southeast-2", "ca-central-1", "sa-east-1",
}

func envInt(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		tb.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// BenchmarkFind seeds SWEEP_BENCH_INSTANCES instances (default 200) in
// each of SWEEP_BENCH_REGIONS regions (default 2, at most 17) of a moto
// server, one in 20 of them a worker's (tagged after launch like the
// master does, half of those past MaxAge by the injected clock), the rest
// foreign, then times one Find over all regions against a naive listing:
// per region, DescribeInstances of every instance with no server-side
// filter, paginated, filtered on the client, which is what a shell loop of
// `aws ec2 describe-instances --region R` does. It reports the wall time
// and API calls of both and their ratios. The size is
// SWEEP_BENCH_REGIONS=17 SWEEP_BENCH_INSTANCES=2000. With SWEEP_BENCH_AWSCLI
// set it also times a shell-style loop of the aws CLI (awsCLIListing), once.
func BenchmarkFind(b *testing.B) {
	nRegions := min(envInt(b, "SWEEP_BENCH_REGIONS", 2), len(benchRegions))
	perRegion := envInt(b, "SWEEP_BENCH_INSTANCES", 200)
	regions := benchRegions[:nRegions]
	url := mototest.Start(b)
	clients, get := motoClients(url)

	seedStart := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var runTime time.Duration
	var runCalls int
	for _, region := range regions {
		wg.Go(func() {
			s := newSeeder(b, get(region))
			ours := max(perRegion/20, 1)
			for left := perRegion - ours; left > 0; left -= 500 {
				t0 := time.Now()
				s.instances(s.base, min(left, 500), "", nil)
				mu.Lock()
				runTime += time.Since(t0)
				runCalls++
				mu.Unlock()
			}
			tags := fleet.TagList(map[string]string{fleet.TagWorker: "bench"})
			s.instances(s.base, ours, "", tags)
		})
	}
	wg.Wait()
	b.Logf("seeded %d regions x %d instances in %s; RunInstances (up to 500 each, regions in parallel): %d calls, %s per call on average",
		nRegions, perRegion, time.Since(seedStart).Round(time.Millisecond), runCalls, (runTime / time.Duration(max(runCalls, 1))).Round(time.Millisecond))

	ctx := context.Background()
	opts := Options{Regions: regions, MaxAge: time.Hour, Now: func() time.Time { return time.Now().Add(2 * time.Hour) }}
	var findTime, naiveTime time.Duration
	var findCalls, naiveCalls int64
	var found, naiveFound int
	for b.Loop() {
		t0 := time.Now()
		rep, err := Find(ctx, clients, opts)
		if err != nil {
			b.Fatalf("Find = %v", err)
		}
		findTime += time.Since(t0)
		findCalls += rep.APICalls
		found = rep.Counts().Zombies

		t0 = time.Now()
		n, calls, err := naiveListing(ctx, clients, regions)
		if err != nil {
			b.Fatalf("naive listing = %v", err)
		}
		naiveTime += time.Since(t0)
		naiveCalls += calls
		naiveFound = n
	}
	if want := nRegions * max(perRegion/20, 1); found != want || naiveFound != want {
		b.Fatalf("Find found %d zombies, the naive listing %d; want %d", found, naiveFound, want)
	}
	if os.Getenv("SWEEP_BENCH_AWSCLI") != "" {
		t0 := time.Now()
		n, calls, err := awsCLIListing(url, regions)
		if err != nil {
			b.Fatalf("aws CLI listing: %v", err)
		}
		d := time.Since(t0)
		fmt.Fprintf(os.Stderr, "aws ec2 describe-instances loop over %d regions: %s, %d calls, %d worker instances; ratio to Find: time %.2f, calls %.2f\n",
			nRegions, d.Round(time.Millisecond), calls, n, d.Seconds()/(findTime.Seconds()/float64(b.N)), float64(calls)/(float64(findCalls)/float64(b.N)))
	}
	n := float64(b.N)
	b.ReportMetric(float64(findCalls)/n, "find-calls/op")
	b.ReportMetric(float64(naiveCalls)/n, "naive-calls/op")
	b.ReportMetric(findTime.Seconds()/n, "find-s/op")
	b.ReportMetric(naiveTime.Seconds()/n, "naive-s/op")
	b.ReportMetric(naiveTime.Seconds()/findTime.Seconds(), "naive/find-time")
	b.ReportMetric(float64(naiveCalls)/float64(findCalls), "naive/find-calls")
	fmt.Fprintf(os.Stderr, "sweep of %d regions x %d instances: Find %s, %d API calls; naive per-region listing %s, %d API calls; ratio time %.2f, calls %.2f\n",
		nRegions, perRegion, (findTime / time.Duration(b.N)).Round(time.Millisecond), findCalls/int64(b.N),
		(naiveTime / time.Duration(b.N)).Round(time.Millisecond), naiveCalls/int64(b.N),
		naiveTime.Seconds()/findTime.Seconds(), float64(naiveCalls)/float64(findCalls))
}

// awsCLIListing runs `aws ec2 describe-instances` against moto at url,
// region by region, one page (up to 1000 instances) per invocation,
// following NextToken, and counts the running instances with the worker
// tag. It returns that count and the number of invocations (API calls).
func awsCLIListing(url string, regions []string) (int, int, error) {
	found, calls := 0, 0
	for _, region := range regions {
		token := ""
		for {
			args := []string{"ec2", "describe-instances", "--region", region, "--endpoint-url", url,
				"--no-paginate", "--max-results", "1000", "--output", "json"}
			if token != "" {
				args = append(args, "--next-token", token)
			}
			cmd := exec.Command("aws", args...)
			cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing", "AWS_PAGER=")
			out, err := cmd.Output()
			calls++
			if err != nil {
				return 0, calls, fmt.Errorf("aws %s: %w", strings.Join(args, " "), err)
			}
			var page struct {
				Reservations []struct {
					Instances []struct {
						State struct{ Name string }
						Tags  []struct{ Key, Value string }
					}
				}
				NextToken string
			}
			if err := json.Unmarshal(out, &page); err != nil {
				return 0, calls, fmt.Errorf("aws describe-instances in %s: %w", region, err)
			}
			for _, r := range page.Reservations {
				for _, in := range r.Instances {
					for _, t := range in.Tags {
						if t.Key == fleet.TagWorker && in.State.Name == "running" {
							found++
						}
					}
				}
			}
			if token = page.NextToken; token == "" {
				break
			}
		}
	}
	return found, calls, nil
}

// naiveListing lists every instance of every region, one region after the
// other, and counts those tagged with the worker tag on the client.
func naiveListing(ctx context.Context, clients ClientFunc, regions []string) (int, int64, error) {
	var calls Calls
	found := 0
	for _, region := range regions {
		p := ec2.NewDescribeInstancesPaginator(Counting(clients(region), &calls), &ec2.DescribeInstancesInput{MaxResults: aws.Int32(1000)})
		for p.HasMorePages() {
			out, err := p.NextPage(ctx)
			if err != nil {
				return 0, calls.Total(), fmt.Errorf("region %s: %w", region, err)
			}
			for _, r := range out.Reservations {
				for _, in := range r.Instances {
					if _, ok := tagsMap(in.Tags)[fleet.TagWorker]; ok && in.State != nil && in.State.Name == "running" {
						found++
					}
				}
			}
		}
	}
	return found, calls.Total(), nil
}
