/* Draws the analytics page's charts (Chart.js, from our static files) from the JSON the page
   embeds as #analytics-data. Every chart is kept in window.hepggCharts by name, and
   document.body.dataset.chartsDrawn counts them once they are drawn (the browser test reads both). */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("analytics-data").textContent);
  var palette = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
                 "#ff9da7", "#9c755f", "#bab0ac", "#1f77b4", "#8c564b"];
  var charts = {};
  window.hepggCharts = charts;

  var common = {
    animation: false,
    responsive: true,
    interaction: { mode: "index", intersect: false },
    plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
  };

  function stacked(id, breakdown, metric, money) {
    var canvas = document.getElementById(id);
    if (!canvas) { return; }
    var datasets = breakdown.series.map(function (series, i) {
      return { label: series.label, data: series[metric], backgroundColor: palette[i % palette.length],
               stack: "total" };
    });
    charts[id] = new Chart(canvas, {
      type: "bar",
      data: { labels: data.days, datasets: datasets },
      options: Object.assign({}, common, {
        scales: {
          x: { stacked: true },
          y: { stacked: true, beginAtZero: true,
               ticks: { callback: function (v) { return money ? "$" + Number(v.toPrecision(4)) : compact(v); } } },
        },
      }),
    });
  }

  function compact(value) {
    var abs = Math.abs(value);
    if (abs >= 1e9) { return (value / 1e9).toFixed(1) + "G"; }
    if (abs >= 1e6) { return (value / 1e6).toFixed(1) + "M"; }
    if (abs >= 1e3) { return (value / 1e3).toFixed(1) + "k"; }
    return String(value);
  }

  function draw() {
    stacked("chart-tokens-model", data.by_model, "tokens", false);
    stacked("chart-cost-model", data.by_model, "cost", true);
    stacked("chart-tokens-machine", data.by_machine, "tokens", false);
    stacked("chart-cost-machine", data.by_machine, "cost", true);
    stacked("chart-tokens-key", data.by_key, "tokens", false);
    stacked("chart-cost-key", data.by_key, "cost", true);

    charts["chart-requests"] = new Chart(document.getElementById("chart-requests"), {
      data: {
        labels: data.days,
        datasets: [
          { type: "bar", label: "requests", data: data.requests, backgroundColor: palette[0],
            yAxisID: "y" },
          { type: "line", label: "error rate (%)", data: data.error_rate, borderColor: palette[2],
            backgroundColor: palette[2], spanGaps: true, yAxisID: "rate" },
        ],
      },
      options: Object.assign({}, common, {
        scales: {
          y: { beginAtZero: true, position: "left", ticks: { callback: compact } },
          rate: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false },
                  ticks: { callback: function (v) { return v + " %"; } } },
        },
      }),
    });

    charts["chart-latency"] = new Chart(document.getElementById("chart-latency"), {
      type: "line",
      data: {
        labels: data.days,
        datasets: [
          { label: "latency p50", data: data.latency_p50, borderColor: palette[0], backgroundColor: palette[0] },
          { label: "latency p95", data: data.latency_p95, borderColor: palette[0], backgroundColor: palette[0],
            borderDash: [6, 4] },
          { label: "TTFB p50", data: data.ttfb_p50, borderColor: palette[1], backgroundColor: palette[1] },
          { label: "TTFB p95", data: data.ttfb_p95, borderColor: palette[1], backgroundColor: palette[1],
            borderDash: [6, 4] },
        ].map(function (d) { d.spanGaps = true; return d; }),
      },
      options: Object.assign({}, common, { scales: { y: { beginAtZero: true } } }),
    });
    document.body.dataset.chartsDrawn = String(Object.keys(charts).length);
  }

  draw();
})();
