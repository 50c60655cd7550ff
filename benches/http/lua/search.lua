-- POST _search with the filter in BENCH_FILTER (wrk's URL carries the query string).
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("BENCH_FILTER") or "{}"
