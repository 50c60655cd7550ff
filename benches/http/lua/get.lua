-- GET of wrk's URL (health, baseline).
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
