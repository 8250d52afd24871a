package exchange

import (
	"cmp"
	"io"
	"net/http"
)

// The cost table's paths (Config.Costs) that are none of the fixed endpoints are
// served as GET /api/request is, with any method the table names:
//
//   - signed, when the request carries API-Sign: as POST /api/private (the key's id
//     in API-Key, nonce and req_id in the form body, Kraken's signature over this
//     path);
//   - otherwise the key in api_key (query or form body) or in the X-MBX-APIKEY
//     header (Binance's; its timestamp and signature are not checked), req_id in
//     the query, the form body or X-Request-Id, and the nonce in nonce unless
//     Config.NoNonce.
//
// Each call costs what the table says for its method and path.

// routePaths adds the cost table's own paths.
func (s *Server) routePaths(mux *http.ServeMux) {
	for _, pc := range s.cfg.Costs {
		if !builtinPaths[pc.Method+" "+pc.Path] {
			mux.HandleFunc(pc.Method+" "+pc.Path, s.handlePath)
		}
	}
}

// handlePath serves a path of the cost table.
func (s *Server) handlePath(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(io.LimitReader(r.Body, maxFormBody))
	if r.Header.Get("API-Sign") != "" {
		s.serveSigned(w, r, raw)
		return
	}
	p := params(r, raw)
	apiKey := cmp.Or(p.Get("api_key"), r.Header.Get("X-MBX-APIKEY"))
	a := s.bySecret[apiKey]
	if a == nil && apiKey != "" {
		a = s.modes.byID[apiKey]
	}
	s.serve(w, r, refCall{
		a: a, apiKey: apiKey, nonce: p.Get("nonce"),
		reqID: cmp.Or(p.Get("req_id"), r.Header.Get("X-Request-Id")),
		cost:  s.costs.of(r.Method, r.URL.Path),
	})
}
