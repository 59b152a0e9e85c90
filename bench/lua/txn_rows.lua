-- Transaction-size workload for bench/run.sh: each event is BEGIN; one UPDATE that changes
-- --rows consecutive rows of one sbtest table (k = k + 1 over an id range); COMMIT. The write
-- set therefore carries exactly --rows row images, which is what the scaling section varies.
-- Uses the tables `sysbench oltp_common prepare` creates; the first id follows --rand-type.

sysbench.cmdline.options = {
   rows = {"Rows changed per transaction", 1},
   tables = {"Number of tables", 4},
   table_size = {"Rows per table", 10000},
   -- Accepted and ignored, so that every workload of bench/run.sh shares one command line.
   auto_inc = {"Ignored (the tables already exist)", false},
}

function thread_init()
   drv = sysbench.sql.driver()
   con = drv:connect()
   stmts, params = {}, {}
   for t = 1, sysbench.opt.tables do
      stmts[t] = con:prepare(string.format(
         "UPDATE sbtest%d SET k = k + 1 WHERE id BETWEEN ? AND ?", t))
      params[t] = {stmts[t]:bind_create(sysbench.sql.type.INT),
                   stmts[t]:bind_create(sysbench.sql.type.INT)}
      stmts[t]:bind_param(unpack(params[t]))
   end
end

function thread_done()
   for t = 1, #stmts do stmts[t]:close() end
   con:disconnect()
end

function event()
   local n = sysbench.opt.rows
   local t = sysbench.rand.uniform(1, sysbench.opt.tables)
   local first = sysbench.rand.default(1, sysbench.opt.table_size - n + 1)
   params[t][1]:set(first)
   params[t][2]:set(first + n - 1)
   con:query("BEGIN")
   stmts[t]:execute()
   con:query("COMMIT")
end

-- An ignored error (1213, 1205) restarts the event. 1205 leaves the transaction open in
-- InnoDB, so end it before the next BEGIN would commit it implicitly. pcall: if the ROLLBACK
-- itself fails (certus answered 1213 to it after a brute-force abort), sysbench would stop
-- with "thread_run function failed: (not a string)"; the next BEGIN starts clean anyway.
function sysbench.hooks.before_restart_event(err)
   pcall(con.query, con, "ROLLBACK")
end
