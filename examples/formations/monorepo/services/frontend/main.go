// Command frontend serves a page showing a quote it asks the api for. It finds the api at
// API_URL when set, else by asking Consul's DNS for the instances of the Consul service
// named by API_SERVICE.
package main

import (
	"encoding/json"
	"fmt"
	"html/template"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

var page = template.Must(template.New("page").Parse(`<!doctype html>
<title>Quote of the moment</title>
<blockquote>{{.}}</blockquote>
`))

func main() {
	client := &http.Client{Timeout: 2 * time.Second}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		api, err := apiURL()
		if err != nil {
			http.Error(w, "api: "+err.Error(), http.StatusBadGateway)
			return
		}
		resp, err := client.Get(api + "/quote")
		if err != nil {
			http.Error(w, "api: "+err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		var body struct{ Quote string }
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			http.Error(w, "api: "+err.Error(), http.StatusBadGateway)
			return
		}
		page.Execute(w, body.Quote)
	})
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	log.Printf("frontend: listening on :%s", port)
	log.Fatal(http.ListenAndServe(":"+port, nil))
}

// apiURL is the api's base URL: API_URL, or an instance of the Consul service API_SERVICE
// found through a DNS SRV query (Consul registers each instance with the host port it is
// published on).
func apiURL() (string, error) {
	if u := os.Getenv("API_URL"); u != "" {
		return u, nil
	}
	service := os.Getenv("API_SERVICE")
	if service == "" {
		return "http://localhost:8081", nil
	}
	_, srvs, err := net.LookupSRV("", "", service+".service.consul")
	if err != nil {
		return "", err
	}
	host := strings.TrimSuffix(srvs[0].Target, ".")
	return "http://" + net.JoinHostPort(host, strconv.Itoa(int(srvs[0].Port))), nil
}
