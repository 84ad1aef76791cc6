// azgo asks for a token the way a Go application on an AKS node does: azidentity's
// ManagedIdentityCredential, whose IMDS address (http://169.254.169.254) is a constant. It prints one
// JSON line: {"ok": true, "token": ..., "expires_on": ...} or {"ok": false, "error": ...}, and the
// seconds the call took. hack/image.sh builds it (static, CGO_ENABLED=0) into nmisim-clients:dev.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

func main() {
	clientID := flag.String("client-id", "", "the user-assigned identity's client ID (empty: none sent)")
	scope := flag.String("scope", "https://management.azure.com/.default", "the scope asked for")
	retries := flag.Int("retries", 0, "the SDK's MaxRetries (0: azidentity's IMDS default, 6; -1: no retry)")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up after this long")
	flag.Parse()

	opts := &azidentity.ManagedIdentityCredentialOptions{}
	opts.Retry.MaxRetries = int32(*retries)
	if *clientID != "" {
		opts.ID = azidentity.ClientID(*clientID)
	}
	out := map[string]any{}
	start := time.Now()
	cred, err := azidentity.NewManagedIdentityCredential(opts)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		var tok azcore.AccessToken
		tok, err = cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{*scope}})
		if err == nil {
			out["ok"] = true
			out["token"] = tok.Token
			out["expires_on"] = tok.ExpiresOn.Unix()
		}
	}
	if err != nil {
		out["ok"] = false
		out["error"] = err.Error()
	}
	out["seconds"] = time.Since(start).Seconds()
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
