package main

import (
	"encoding/base64"
	"errors"
	"testing"
)

func jwt(payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc([]byte(payload)) + ".c2ln"
}

func TestTokenFieldsNeverPrintsAJWT(t *testing.T) {
	out := map[string]any{}
	tok := jwt(`{"aud":"https://management.azure.com/","appid":"c1","tid":"t1","exp":1,"nmisim":"simulated","nmisim_x":"y"}`)
	tokenFields(tok, out)
	if _, ok := out["token"]; ok {
		t.Fatalf("a JWT was printed: %v", out)
	}
	claims, _ := out["claims"].(map[string]any)
	if claims["appid"] != "c1" || claims["tid"] != "t1" || claims["nmisim"] != "simulated" || claims["nmisim_x"] != "y" {
		t.Fatalf("claims: %v", claims)
	}
	if _, ok := claims["exp"]; ok {
		t.Fatalf("exp is not an identifying claim: %v", claims)
	}
}

func TestTokenFieldsPrintsNMIsFakeTokenWhole(t *testing.T) {
	out := map[string]any{}
	fake := "nmisim-simulated-token.NOT-A-REAL-CREDENTIAL.00000000-0000-4000-8000-000000000001"
	tokenFields(fake, out)
	if out["token"] != fake || out["claims"] != nil {
		t.Fatalf("got %v", out)
	}
}

func TestErrorFields(t *testing.T) {
	msg := "WorkloadIdentityCredential authentication failed. POST https://login.microsoftonline.com/t/oauth2/v2.0/token\n" +
		`{"error":"invalid_request","error_description":"AADSTS70021: No matching federated identity record found"}`
	out := map[string]any{}
	errorFields(errors.New(msg), false, out)
	if out["aadsts"] != 70021 || out["entra_error"] != "invalid_request" || out["error"] != "errorString" || out["ok"] != false {
		t.Fatalf("got %v", out)
	}
	legacy := map[string]any{}
	errorFields(errors.New("404 Not Found"), true, legacy)
	if legacy["error"] != "404 Not Found" || legacy["aadsts"] != nil || legacy["status"] != nil {
		t.Fatalf("got %v", legacy)
	}
}
