// imdsload sends IMDS token requests from inside a pod and measures them: `make bench-serve` runs it on
// the real node against nmisim serve (through NMI's DNAT) and against a bare fixed-body server on the
// same DNAT path. Closed loop (-rate 0: -c workers, each sends its next request when the last is
// answered) or open loop (-rate R requests/s spread over -c workers; latency counted from the
// scheduled send time, so a stall is not hidden). Keep-alive connections, as SDK clients use. Prints
// one JSON object: requests, errors, statuses, requests/s, latency percentiles and a sample of latencies.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"
)

type result struct {
	Requests   int            `json:"requests"`
	Errors     int            `json:"errors"`
	Statuses   map[string]int `json:"statuses"`
	Seconds    float64        `json:"seconds"`
	RPS        float64        `json:"rps"`
	P50ms      float64        `json:"p50_ms"`
	P90ms      float64        `json:"p90_ms"`
	P99ms      float64        `json:"p99_ms"`
	MaxMs      float64        `json:"max_ms"`
	SampleMs   []float64      `json:"sample_ms"`
	FirstError string         `json:"first_error,omitempty"`
}

func main() {
	url := flag.String("url", "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/", "the request target")
	workers := flag.Int("c", 1, "concurrent clients (one keep-alive connection each)")
	duration := flag.Duration("d", 10*time.Second, "how long to send")
	rate := flag.Float64("rate", 0, "open loop: requests per second in all (0: closed loop)")
	warmup := flag.Duration("warmup", time.Second, "requests sent first and not counted")
	flag.Parse()

	transport := &http.Transport{MaxIdleConnsPerHost: *workers, MaxConnsPerHost: *workers, DisableCompression: true}
	client := &http.Client{Transport: transport, Timeout: 120 * time.Second}
	var mu sync.Mutex
	var lat []float64
	res := result{Statuses: map[string]int{}}

	send := func(counted bool, scheduled time.Time) {
		req, _ := http.NewRequest(http.MethodGet, *url, nil)
		req.Header.Set("Metadata", "true")
		resp, err := client.Do(req)
		status := "error"
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			status = fmt.Sprint(resp.StatusCode)
		}
		took := float64(time.Since(scheduled).Nanoseconds()) / 1e6
		if !counted {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		res.Requests++
		res.Statuses[status]++
		if err != nil {
			res.Errors++
			if res.FirstError == "" {
				res.FirstError = err.Error()
			}
			return
		}
		lat = append(lat, took)
	}

	run := func(d time.Duration, counted bool) time.Duration {
		start := time.Now()
		end := start.Add(d)
		var wg sync.WaitGroup
		for w := 0; w < *workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				if *rate <= 0 {
					for time.Now().Before(end) {
						send(counted, time.Now())
					}
					return
				}
				// Worker w owns every workers-th slot of the schedule.
				interval := time.Duration(float64(time.Second) * float64(*workers) / *rate)
				next := start.Add(time.Duration(float64(interval) * float64(w) / float64(*workers)))
				for next.Before(end) {
					if wait := time.Until(next); wait > 0 {
						time.Sleep(wait)
					}
					send(counted, next)
					next = next.Add(interval)
				}
			}(w)
		}
		wg.Wait()
		return time.Since(start)
	}

	run(*warmup, false)
	elapsed := run(*duration, true)
	res.Seconds = elapsed.Seconds()
	res.RPS = float64(res.Requests) / res.Seconds
	sort.Float64s(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(p*float64(len(lat)-1))]
	}
	res.P50ms, res.P90ms, res.P99ms, res.MaxMs = pct(0.50), pct(0.90), pct(0.99), pct(1)
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 2000 && len(lat) > 0; i++ {
		res.SampleMs = append(res.SampleMs, lat[rng.Intn(len(lat))])
	}
	sort.Float64s(res.SampleMs)
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
