// azgo asks for a token the way a Go application in a pod does, with azidentity. Modes:
//
//	azgo [-client-id ID]       ManagedIdentityCredential: IMDS at http://169.254.169.254 (a constant)
//	azgo -wi [-client-id ID] [-disable-instance-discovery]
//	                           WorkloadIdentityCredential from the variables the Workload Identity webhook
//	                           injects (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE,
//	                           AZURE_AUTHORITY_HOST); -client-id asks for another identity in code
//	azgo -dac [-client-id ID] [-disable-instance-discovery]
//	                           DefaultAzureCredential, nothing excluded. It reads the client ID from
//	                           AZURE_CLIENT_ID only, so -client-id sets that variable for this process.
//
// It prints one JSON line, the shape of azpy's: {"mode", "sdk", "ok": true, "claims": {...}, "expires_on",
// "seconds"}, where claims are the access token's identifying claims decoded without verification (a
// token that is not a JWT, as NMI's simulated ones, is printed whole as "token"; a JWT never is); -dac
// adds "source", the credential of the chain that answered (from azidentity's log). On failure: "error"
// (the message in the default mode, as before; the error's type with -wi and -dac), "type", "message",
// "aadsts" (the AADSTS code in the message), "entra_error", "status" (the HTTP status of Entra's or
// IMDS's answer when azidentity kept it). hack/image.sh builds it (static, CGO_ENABLED=0) into
// nmisim-clients:dev.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azlog "github.com/Azure/azure-sdk-for-go/sdk/azcore/log"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// sdkVersion is the azidentity version hack/image.sh pins (AZIDENTITY_VERSION), set with -ldflags -X.
var sdkVersion = "unknown"

// claimNames are the claims that say whom a token was issued to and by whom.
var claimNames = []string{"aud", "iss", "appid", "azp", "tid", "oid", "sub", "idtyp", "xms_mirid", "nmisim"}

var (
	aadstsRE     = regexp.MustCompile(`AADSTS(\d+)`)
	entraErrorRE = []*regexp.Regexp{regexp.MustCompile(`error '\((\w+)\)`), regexp.MustCompile(`"error"\s*:\s*"(\w+)"`)}
	sourceRE     = regexp.MustCompile(`authenticated with (\w+)`)
)

// jwtClaims is the payload of a JWT, not verified; nil when token is not one.
func jwtClaims(token string) map[string]any {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil
	}
	var claims map[string]any
	if json.Unmarshal(raw, &claims) != nil || claims == nil {
		return nil
	}
	return claims
}

// tokenFields is what the JSON line says of a token: its identifying claims when it is a JWT, else the token.
func tokenFields(token string, out map[string]any) {
	claims := jwtClaims(token)
	if claims == nil {
		out["token"] = token
		return
	}
	picked := map[string]any{}
	for _, k := range claimNames {
		if v, ok := claims[k]; ok {
			picked[k] = v
		}
	}
	for k, v := range claims {
		if strings.HasPrefix(k, "nmisim") {
			picked[k] = v
		}
	}
	out["claims"] = picked
	out["token_length"] = len(token)
}

// aadstsOf is the first AADSTS code in text, or nil.
func aadstsOf(text string) any {
	if m := aadstsRE.FindStringSubmatch(text); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil {
			return n
		}
	}
	return nil
}

// entraErrorOf is Entra's "error" value as the SDK quotes it or a raw body carries it, or nil.
func entraErrorOf(text string) any {
	for _, re := range entraErrorRE {
		if m := re.FindStringSubmatch(text); m != nil {
			return m[1]
		}
	}
	return nil
}

// typeName is the error's Go type without package and pointer: "AuthenticationFailedError".
func typeName(err error) string {
	name := fmt.Sprintf("%T", err)
	name = strings.TrimLeft(name, "*")
	if i := strings.LastIndex(name, "."); i >= 0 {
		name = name[i+1:]
	}
	return name
}

// errorFields fills the failure's fields; legacy keeps "error" the message, as the default mode always had.
func errorFields(err error, legacy bool, out map[string]any) {
	msg := err.Error()
	out["ok"] = false
	out["type"] = typeName(err)
	out["message"] = msg
	out["aadsts"] = aadstsOf(msg)
	out["entra_error"] = entraErrorOf(msg)
	out["status"] = nil
	var afe *azidentity.AuthenticationFailedError
	if errors.As(err, &afe) && afe.RawResponse != nil {
		out["status"] = afe.RawResponse.StatusCode
	}
	if legacy {
		out["error"] = msg
	} else {
		out["error"] = out["type"]
	}
}

// sourceLog collects which credential of DefaultAzureCredential's chain answered, from azidentity's log.
type sourceLog struct {
	mu     sync.Mutex
	source string
}

func (s *sourceLog) listen(_ azlog.Event, msg string) {
	if m := sourceRE.FindStringSubmatch(msg); m != nil {
		s.mu.Lock()
		s.source = m[1]
		s.mu.Unlock()
	}
}

func (s *sourceLog) get() any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.source == "" {
		return nil
	}
	return s.source
}

func credential(mode, clientID string, retries int, disableDiscovery bool) (azcore.TokenCredential, error) {
	switch mode {
	case "wi":
		opts := &azidentity.WorkloadIdentityCredentialOptions{ClientID: clientID, DisableInstanceDiscovery: disableDiscovery}
		opts.Retry.MaxRetries = int32(retries)
		return azidentity.NewWorkloadIdentityCredential(opts)
	case "dac":
		if clientID != "" {
			if err := os.Setenv("AZURE_CLIENT_ID", clientID); err != nil {
				return nil, err
			}
		}
		opts := &azidentity.DefaultAzureCredentialOptions{DisableInstanceDiscovery: disableDiscovery}
		opts.Retry.MaxRetries = int32(retries)
		return azidentity.NewDefaultAzureCredential(opts)
	default:
		opts := &azidentity.ManagedIdentityCredentialOptions{}
		opts.Retry.MaxRetries = int32(retries)
		if clientID != "" {
			opts.ID = azidentity.ClientID(clientID)
		}
		return azidentity.NewManagedIdentityCredential(opts)
	}
}

func main() {
	clientID := flag.String("client-id", "", "the identity's client ID (empty: none sent; -wi/-dac: AZURE_CLIENT_ID)")
	scope := flag.String("scope", "https://management.azure.com/.default", "the scope asked for")
	retries := flag.Int("retries", 0, "the SDK's MaxRetries (0: azidentity's default; -1: no retry)")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up after this long")
	wi := flag.Bool("wi", false, "WorkloadIdentityCredential instead of ManagedIdentityCredential")
	dac := flag.Bool("dac", false, "DefaultAzureCredential instead of ManagedIdentityCredential")
	noDiscovery := flag.Bool("disable-instance-discovery", false, "-wi/-dac: skip Entra instance discovery")
	flag.Parse()
	if flag.NArg() > 0 || (*wi && *dac) || (*noDiscovery && !*wi && !*dac) {
		fmt.Fprintln(os.Stderr, "azgo: -wi and -dac exclude each other; -disable-instance-discovery needs one; no arguments")
		os.Exit(2)
	}
	mode := "mi"
	if *wi {
		mode = "wi"
	} else if *dac {
		mode = "dac"
	}
	sources := &sourceLog{}
	if mode == "dac" {
		azlog.SetEvents(azidentity.EventAuthentication)
		azlog.SetListener(sources.listen)
	}

	out := map[string]any{"mode": mode, "sdk": "azidentity " + sdkVersion}
	start := time.Now()
	cred, err := credential(mode, *clientID, *retries, *noDiscovery)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		var tok azcore.AccessToken
		tok, err = cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{*scope}})
		if err == nil {
			out["ok"] = true
			tokenFields(tok.Token, out)
			out["expires_on"] = tok.ExpiresOn.Unix()
		}
	}
	if err != nil {
		errorFields(err, mode == "mi", out)
	}
	if mode == "dac" {
		out["source"] = sources.get()
	}
	if mode == "wi" {
		out["authority_host"] = os.Getenv("AZURE_AUTHORITY_HOST")
	}
	out["seconds"] = time.Since(start).Seconds()
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
